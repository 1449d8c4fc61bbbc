// Top module of the byte-level host-link build (sim/verilator_link.py): hdl/board_top.LinkNpu
// (NpuTop behind HostLink) with its byte streams as plain ports (Verilator mangles the double
// underscores of Amaranth's port names in C++).
module opennpu_link_tb (
    input clk,
    input rst,
    input rx_valid,
    input [7:0] rx_payload,
    output rx_ready,
    output tx_valid,
    output [7:0] tx_payload,
    input tx_ready,
    output idle
);
    wire error;
    opennpu_top core (
        .clk(clk),
        .rst(rst),
        .rx__valid(rx_valid),
        .rx__ready(rx_ready),
        .rx__payload(rx_payload),
        .tx__valid(tx_valid),
        .tx__ready(tx_ready),
        .tx__payload(tx_payload),
        .rx_overrun(1'b0),
        .rx_framing_error(1'b0),
        .idle(idle),
        .error(error)
    );
endmodule

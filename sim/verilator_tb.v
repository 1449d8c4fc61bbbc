// Top module of the Verilator build (sim/verilator.py): NpuTop with every input registered.
//
// The harness (sim/verilator_harness.cpp) presents the inputs of cycle t+1 on the *_next ports before
// the rising edge that ends cycle t. At that edge the NPU samples cycle t's values (held in the
// registers below) while the registers take cycle t+1's, and one combinational settle after the edge
// yields the NPU's outputs for cycle t+1. The NPU sees exactly the input sequence of a testbench that
// drives its ports directly, but Verilator evaluates the design's logic once per cycle instead of
// three times (top-level inputs feed combinational paths to ready, so a direct drive re-runs that
// logic on every eval() call). `rst` starts high, so the first edge resets the NPU. `counter_sel` is
// not registered: the harness reads the counters through it once the run is over.
module opennpu_tb #(
    parameter CMD_BITS = 129,
    parameter BUS_BITS = 128,
    parameter STATUS_BITS = 20,
    parameter SEL_BITS = 3
) (
    input clk,
    input rst_next,
    input cmd_valid_next,
    input [CMD_BITS-1:0] cmd_payload_next,
    input din_valid_next,
    input [BUS_BITS-1:0] din_payload_next,
    input dout_ready_next,
    input [SEL_BITS-1:0] counter_sel,
    output cmd_ready,
    output din_ready,
    output dout_valid,
    output [BUS_BITS-1:0] dout_payload,
    output [STATUS_BITS-1:0] status,
    output [BUS_BITS-1:0] counter_beat
);
    reg rst = 1'b1;
    reg cmd_valid = 1'b0;
    reg din_valid = 1'b0;
    reg dout_ready = 1'b0;
    reg [CMD_BITS-1:0] cmd_payload = {CMD_BITS{1'b0}};
    reg [BUS_BITS-1:0] din_payload = {BUS_BITS{1'b0}};

    always @(posedge clk) begin
        rst <= rst_next;
        cmd_valid <= cmd_valid_next;
        cmd_payload <= cmd_payload_next;
        din_valid <= din_valid_next;
        din_payload <= din_payload_next;
        dout_ready <= dout_ready_next;
    end

    opennpu_top npu (
        .clk(clk),
        .rst(rst),
        .cmd__valid(cmd_valid),
        .cmd__ready(cmd_ready),
        .cmd__payload(cmd_payload),
        .din__valid(din_valid),
        .din__ready(din_ready),
        .din__payload(din_payload),
        .dout__valid(dout_valid),
        .dout__ready(dout_ready),
        .dout__payload(dout_payload),
        .status(status),
        .counter_sel(counter_sel),
        .counter_beat(counter_beat)
    );
endmodule

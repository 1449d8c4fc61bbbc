// opennpu byte-level host-link harness: hdl/board_top.LinkNpu (NpuTop behind HostLink) on Verilator,
// driven interactively by sim/verilator_link.py over stdin / stdout.
//
// argv[1]: cycles per byte (the UART's byte time: the receiver takes at most one byte, and the
// transmitter sends at most one byte, per that many cycles). Requests (little-endian):
//   'R' u64 max_cycles, u64 quiet, u32 n, n bytes: queue the bytes for the link's receiver, then run
//       until max_cycles more cycles have passed, or (quiet > 0) bytes were transmitted and the
//       transmitter has been silent for quiet cycles since the last one.
//       Reply: u64 cycle (since start), u32 bytes still queued, u8 idle, u32 m, m transmitted bytes.
//   'X': exit.
// The model starts from reset (SRAMs zero, as in Amaranth's simulator).
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <memory>
#include <vector>

#include "Vopennpu_link_tb.h"
#include "verilated.h"

namespace {

[[noreturn]] void die(const char* what) {
    std::fprintf(stderr, "opennpu link harness: %s\n", what);
    std::exit(2);
}

bool read_exact(void* dst, size_t n) {
    return n == 0 || std::fread(dst, 1, n, stdin) == n;
}

template <typename T> T read_le() {
    T v{};
    if (!read_exact(&v, sizeof v)) die("truncated request");
    return v;
}

template <typename T> void write_le(std::vector<uint8_t>& out, T v) {
    const auto* p = reinterpret_cast<const uint8_t*>(&v);
    out.insert(out.end(), p, p + sizeof v);
}

}  // namespace

int main(int argc, char** argv) {
    if (argc < 2) die("usage: harness CYCLES_PER_BYTE");
    const uint64_t byte_cycles = std::strtoull(argv[1], nullptr, 10);
    auto ctx = std::make_unique<VerilatedContext>();
    ctx->randReset(0);
    auto top = std::make_unique<Vopennpu_link_tb>(ctx.get());
    std::deque<uint8_t> rx_queue;
    uint64_t cycle = 0, rx_gap = 0, tx_gap = 0;

    auto step = [&](bool* sent, uint8_t* byte) {
        top->rx_valid = !rx_queue.empty() && rx_gap == 0;
        top->rx_payload = rx_queue.empty() ? 0 : rx_queue.front();
        top->tx_ready = tx_gap == 0;
        top->clk = 0;
        top->eval();                                  // settle this cycle's handshakes
        const bool rx_fire = top->rx_valid && top->rx_ready;
        *sent = top->tx_valid && top->tx_ready;
        *byte = top->tx_payload;
        top->clk = 1;
        top->eval();
        ++cycle;
        if (rx_fire) {
            rx_queue.pop_front();
            rx_gap = byte_cycles ? byte_cycles - 1 : 0;
        } else if (rx_gap) {
            --rx_gap;
        }
        if (*sent) {
            tx_gap = byte_cycles ? byte_cycles - 1 : 0;
        } else if (tx_gap) {
            --tx_gap;
        }
    };

    bool sent;
    uint8_t byte;
    top->rst = 1;
    for (int i = 0; i < 4; ++i) step(&sent, &byte);
    top->rst = 0;

    std::vector<uint8_t> out, got;
    for (;;) {
        int op = std::fgetc(stdin);
        if (op == EOF || op == 'X') break;
        if (op != 'R') die("bad request");
        const uint64_t max_cycles = read_le<uint64_t>(), quiet = read_le<uint64_t>();
        const uint32_t n = read_le<uint32_t>();
        std::vector<uint8_t> bytes(n);
        if (!read_exact(bytes.data(), n)) die("truncated request");
        rx_queue.insert(rx_queue.end(), bytes.begin(), bytes.end());
        got.clear();
        uint64_t silent = 0;
        for (uint64_t i = 0; i < max_cycles; ++i) {
            step(&sent, &byte);
            if (sent) {
                got.push_back(byte);
                silent = 0;
            } else if (++silent >= quiet && quiet && !got.empty()) {
                break;
            }
        }
        out.clear();
        write_le<uint64_t>(out, cycle);
        write_le<uint32_t>(out, static_cast<uint32_t>(rx_queue.size()));
        out.push_back(top->idle ? 1 : 0);
        write_le<uint32_t>(out, static_cast<uint32_t>(got.size()));
        out.insert(out.end(), got.begin(), got.end());
        std::fwrite(out.data(), 1, out.size(), stdout);
        std::fflush(stdout);
    }
    top->final();
    return 0;
}

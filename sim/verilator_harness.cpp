// opennpu Verilator harness: runs whole programs on the verilated NPU, no host call per cycle.
//
// Protocol (all integers little-endian), written by sim/verilator.py:
//   stdin:  u32 magic "ONPI", u32 count, then per program
//           u64 max_cycles (0: no total limit), u64 max_quiet, u32 n_commands, u32 n_beats,
//           u32 backpressure (0/1), u64 seed, n_commands x 16-byte command words, n_beats x BUS beats.
//   stdout: u32 magic "ONPO", u32 count, then per program
//           u32 outcome (0 idle, 1 total cycle limit, 2 no stream transfer for max_quiet cycles),
//           u64 cycles, STATUS_BYTES raw status port, COUNTER_BEATS x BUS counter readout beats,
//           u32 n_out, n_out x BUS data-out beats.
// Each program runs on a fresh model (SRAMs zero, registers at their reset values), like a fresh
// pysim Simulator. Stream behaviour mirrors sim/pysim.py: a sender may idle 1..3 cycles before each
// transfer (probability 1/2) and data-out is ready with probability 0.6 per cycle when back-pressure
// is on; valid and payload hold until the transfer. The run ends in the first cycle after the final
// command was taken in which status.idle is high.
//
// The model's top is opennpu_tb (sim/verilator_tb.v), which registers the NPU's inputs: the harness
// reads cycle t's handshakes, then presents cycle t+1's inputs and clocks once.
//
// Compile-time constants (-D, from the Python layouts): OPENNPU_BUS_BYTES, OPENNPU_CMD_LAST_BIT,
// OPENNPU_IDLE_BIT, OPENNPU_STATUS_BYTES, OPENNPU_COUNTER_BEATS. Tracing: VM_TRACE_VCD / VM_TRACE_FST
// builds write the waveform of a single program to the path in argv[1].
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <memory>
#include <type_traits>
#include <vector>

#include "Vopennpu_tb.h"
#include "verilated.h"
#if VM_TRACE_FST
#include "verilated_fst_c.h"
using Tracer = VerilatedFstC;
#elif VM_TRACE_VCD
#include "verilated_vcd_c.h"
using Tracer = VerilatedVcdC;
#endif

namespace {

constexpr size_t kBus = OPENNPU_BUS_BYTES;
constexpr size_t kCmdBytes = 16;
constexpr size_t kCmdPortBytes = OPENNPU_CMD_LAST_BIT / 8 + 1;

[[noreturn]] void die(const char* what) {
    std::fprintf(stderr, "opennpu harness: %s\n", what);
    std::exit(2);
}

void read_exact(void* dst, size_t n) {
    if (n && std::fread(dst, 1, n, stdin) != n) die("truncated input");
}

template <typename T> T read_le() {
    T v{};
    read_exact(&v, sizeof v);
    return v;
}

template <typename T> void write_le(std::vector<uint8_t>& out, T v) {
    const auto* p = reinterpret_cast<const uint8_t*>(&v);
    out.insert(out.end(), p, p + sizeof v);
}

// Verilator ports are CData/SData/IData/QData (<= 64 bits) or VlWide<N> (32-bit words, LSW first).
template <typename P> void put_bytes(P& port, const uint8_t* src, size_t n) {
    if constexpr (std::is_integral_v<P>) {
        P v = 0;
        std::memcpy(&v, src, n < sizeof v ? n : sizeof v);
        port = v;
    } else {
        std::memset(port.data(), 0, sizeof(port.m_storage));
        std::memcpy(port.data(), src, n < sizeof(port.m_storage) ? n : sizeof(port.m_storage));
    }
}

template <typename P> void get_bytes(const P& port, uint8_t* dst, size_t n) {
    std::memset(dst, 0, n);
    if constexpr (std::is_integral_v<P>) {
        std::memcpy(dst, &port, n < sizeof port ? n : sizeof port);
    } else {
        std::memcpy(dst, port.data(), n < sizeof(port.m_storage) ? n : sizeof(port.m_storage));
    }
}

template <typename P> bool get_bit(const P& port, unsigned bit) {
    if constexpr (std::is_integral_v<P>) {
        return (static_cast<uint64_t>(port) >> bit) & 1;
    } else {
        return (port.data()[bit / 32] >> (bit % 32)) & 1;
    }
}

// splitmix64: one independent generator per stream.
struct Rng {
    uint64_t s;
    uint64_t next() {
        uint64_t z = (s += 0x9E3779B97F4A7C15ull);
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
        return z ^ (z >> 31);
    }
    double uniform() { return (next() >> 11) * (1.0 / 9007199254740992.0); }
};

struct Stream {
    bool on;
    Rng rng;
    // Idle cycles before the next transfer (pysim: none, or 1..3 with probability 1/2).
    int gap() {
        if (!on) return 0;
        uint64_t r = rng.next();
        return (r & 1) ? 0 : 1 + static_cast<int>((r >> 1) % 3);
    }
};

struct Program {
    uint64_t max_cycles, max_quiet, seed;
    bool backpressure;
    std::vector<uint8_t> commands, beats;
    uint32_t n_commands, n_beats;
};

Program read_program() {
    Program p;
    p.max_cycles = read_le<uint64_t>();
    p.max_quiet = read_le<uint64_t>();
    p.n_commands = read_le<uint32_t>();
    p.n_beats = read_le<uint32_t>();
    p.backpressure = read_le<uint32_t>() != 0;
    p.seed = read_le<uint64_t>();
    p.commands.resize(size_t(p.n_commands) * kCmdBytes);
    p.beats.resize(size_t(p.n_beats) * kBus);
    read_exact(p.commands.data(), p.commands.size());
    read_exact(p.beats.data(), p.beats.size());
    return p;
}

void run(const Program& p, std::vector<uint8_t>& out, const char* trace_path) {
    auto ctx = std::make_unique<VerilatedContext>();
    ctx->randReset(0);  // uninitialised state is zero, as in Amaranth's simulator
    auto top = std::make_unique<Vopennpu_tb>(ctx.get());
#if VM_TRACE_FST || VM_TRACE_VCD
    std::unique_ptr<Tracer> tracer;
    if (trace_path) {
        ctx->traceEverOn(true);
        tracer = std::make_unique<Tracer>();
        top->trace(tracer.get(), 99);
        tracer->open(trace_path);
    }
#else
    (void)trace_path;
#endif
    uint64_t time = 0;
    auto edge = [&]() {  // one clock period: falling edge, then the rising edge that ends the cycle
        top->clk = 0;
        top->eval();
#if VM_TRACE_FST || VM_TRACE_VCD
        if (tracer) tracer->dump(time);
#endif
        ++time;
        top->clk = 1;
        top->eval();
#if VM_TRACE_FST || VM_TRACE_VCD
        if (tracer) tracer->dump(time);
#endif
        ++time;
    };
    Stream cmd{p.backpressure, Rng{p.seed * 3 + 0x1234567}};
    Stream din{p.backpressure, Rng{p.seed * 3 + 0x89abcde}};
    Stream dout{p.backpressure, Rng{p.seed * 3 + 0xf0f0f0f}};

    std::vector<uint8_t> outputs;
    uint8_t cmd_port[kCmdPortBytes], beat[kBus];
    size_t ci = 0, bi = 0;
    int cmd_gap = cmd.gap(), din_gap = din.gap();
    bool cv = false, dv = false, ready = false;
    // Present the inputs of the next cycle on the *_next ports (payloads only when they change).
    auto present = [&]() {
        bool next_cv = ci < p.n_commands && cmd_gap == 0;
        if (next_cv && !cv) {
            std::memset(cmd_port, 0, sizeof cmd_port);
            std::memcpy(cmd_port, &p.commands[ci * kCmdBytes], kCmdBytes);
            if (ci + 1 == p.n_commands) cmd_port[OPENNPU_CMD_LAST_BIT / 8] |= 1u << (OPENNPU_CMD_LAST_BIT % 8);
            put_bytes(top->cmd_payload_next, cmd_port, sizeof cmd_port);
        }
        bool next_dv = bi < p.n_beats && din_gap == 0;
        if (next_dv && !dv) put_bytes(top->din_payload_next, &p.beats[bi * kBus], kBus);
        cv = next_cv;
        dv = next_dv;
        ready = !dout.on || dout.rng.uniform() < 0.6;
        top->cmd_valid_next = cv;
        top->din_valid_next = dv;
        top->dout_ready_next = ready;
    };
    top->rst_next = 0;
    present();
    edge();  // resets the NPU (rst starts high) and registers cycle 0's inputs

    uint64_t cycle = 0, quiet = 0;
    uint32_t outcome = 0;
    for (;;) {
        // The outputs now belong to this cycle's state and inputs: take the handshakes.
        bool progress = false;
        if (cv && top->cmd_ready) {
            ++ci;
            cv = false;
            cmd_gap = cmd.gap();
            progress = true;
        } else if (cmd_gap) {
            --cmd_gap;
        }
        if (dv && top->din_ready) {
            ++bi;
            dv = false;
            din_gap = din.gap();
            progress = true;
        } else if (din_gap) {
            --din_gap;
        }
        if (ready && top->dout_valid) {
            get_bytes(top->dout_payload, beat, kBus);
            outputs.insert(outputs.end(), beat, beat + kBus);
            progress = true;
        }
        present();
        edge();
        ++cycle;
        if (ci == p.n_commands && get_bit(top->status, OPENNPU_IDLE_BIT)) break;
        quiet = progress ? 0 : quiet + 1;
        if (p.max_cycles && cycle >= p.max_cycles) {
            outcome = 1;
            break;
        }
        if (quiet >= p.max_quiet) {
            outcome = 2;
            break;
        }
    }
#if VM_TRACE_FST || VM_TRACE_VCD
    if (tracer) tracer->close();
#endif

    write_le<uint32_t>(out, outcome);
    write_le<uint64_t>(out, cycle);
    uint8_t status[OPENNPU_STATUS_BYTES];
    get_bytes(top->status, status, sizeof status);
    out.insert(out.end(), status, status + sizeof status);
    for (uint32_t sel = 0; sel < OPENNPU_COUNTER_BEATS; ++sel) {   // the counters' readout port
        top->counter_sel = sel;
        top->eval();
        get_bytes(top->counter_beat, beat, kBus);
        out.insert(out.end(), beat, beat + kBus);
    }
    top->final();
    write_le<uint32_t>(out, static_cast<uint32_t>(outputs.size() / kBus));
    out.insert(out.end(), outputs.begin(), outputs.end());
}

}  // namespace

int main(int argc, char** argv) {
    const char* trace_path = argc > 1 ? argv[1] : nullptr;
    if (read_le<uint32_t>() != 0x49504E4Fu) die("bad input magic");
    uint32_t count = read_le<uint32_t>();
    if (trace_path && count != 1) die("tracing needs exactly one program");
    std::vector<uint8_t> out;
    write_le<uint32_t>(out, 0x4F504E4Fu);
    write_le<uint32_t>(out, count);
    for (uint32_t i = 0; i < count; ++i) {
        Program p = read_program();
        run(p, out, trace_path);
        if (out.size() > (64u << 20)) {  // flush large batches as we go
            std::fwrite(out.data(), 1, out.size(), stdout);
            out.clear();
        }
    }
    std::fwrite(out.data(), 1, out.size(), stdout);
    return std::fflush(stdout) == 0 ? 0 : 2;
}

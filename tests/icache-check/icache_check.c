/*
 * icache-check: a QEMU TCG plugin (QEMU 7.2, plugin API version 1) that reports instruction
 * fetches the board could serve stale.
 *
 * QEMU keeps translated code coherent with every store, so a kernel that forgets to clean the
 * D-cache or to invalidate the I-cache after writing instructions runs fine under QEMU and
 * fails on the Cortex-A7. This plugin follows what the board would need instead:
 *
 *   - every guest store to RAM marks its 64-byte line (physical) "written, not cleaned" and
 *     stamps it with the current epoch;
 *   - a clean of a written line by address (DCCMVAU, DCCMVAC, DCCIMVAC) marks it cleaned and
 *     re-stamps it (a clean after the I-cache invalidation is as wrong as none);
 *   - ICIALLUIS moves every vCPU's "I-cache invalidated at" epoch forward, ICIALLU the
 *     executing vCPU's only; the global epoch then advances;
 *   - each time a translated block runs, every line it was fetched from must be clean and
 *     stamped no later than this vCPU's last I-cache invalidation, else it is reported.
 *
 * The plugin API of QEMU 7.2 gives no guest registers, so the address operand of a clean by
 * line is invisible. Test kernels (cargo feature cache-audit) put a probe load of the same
 * address right before each such instruction, in one 8-byte-aligned pair:
 *     ldr rT, [rA]            ; probe: its memory callback gives the line's address
 *     mcr p15, 0, rA, c7, cN, 1
 * When translating, the plugin recognises the pair and treats the probe's load as the clean of
 * that line. A clean by line without the probe is a setup error, reported once, so a kernel
 * built without the feature (or a new maintenance routine) cannot pass silently.
 *
 * Fetches are placed in physical memory through the host address QEMU gives for each
 * instruction: guest RAM is one host allocation, whose base is calibrated from the kernel's own
 * code, which runs in the direct map (VA = PA + kernel-offset).
 *
 * Lines printed on stderr, all starting with "icache-check: ":
 *   vcpu N fetched ...   a report (the first max-reports of each kind)
 *   setup: ...           the plugin cannot check what it should (fails the run as well)
 *   summary: ...         at exit: counts; its absence means the plugin did not finish
 *
 * Arguments (-plugin icache-check.so,name=value,...):
 *   max-reports=N        reports printed of each kind (default 10; all are counted)
 *   kernel-offset=HEX    VA - PA of the kernel's direct map (default 0x80000000)
 *   ram-mib=N            guest RAM from physical 0 (default 1024, raspi2b)
 */
#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- The part of QEMU 7.2's plugin API this file uses (API version 1), declared here because
 * Debian does not package qemu-plugin.h. The functions are resolved from the QEMU binary. */

typedef uint64_t qemu_plugin_id_t;
typedef uint32_t qemu_plugin_meminfo_t; /* opaque: only passed back to QEMU */
struct qemu_plugin_tb;                  /* opaque handles */
struct qemu_plugin_insn;
struct qemu_plugin_hwaddr;

typedef struct {
    const char *target_name;
    struct {
        int min;
        int cur;
    } version;
    bool system_emulation;
    union {
        struct {
            int smp_vcpus;
            int max_vcpus;
        } system;
    };
} qemu_info_t;

enum qemu_plugin_cb_flags { QEMU_PLUGIN_CB_NO_REGS, QEMU_PLUGIN_CB_R_REGS, QEMU_PLUGIN_CB_RW_REGS };
enum qemu_plugin_mem_rw { QEMU_PLUGIN_MEM_R = 1, QEMU_PLUGIN_MEM_W, QEMU_PLUGIN_MEM_RW };

typedef void (*plugin_udata_cb)(qemu_plugin_id_t id, void *userdata);
typedef void (*vcpu_udata_cb)(unsigned int vcpu_index, void *userdata);
typedef void (*tb_trans_cb)(qemu_plugin_id_t id, struct qemu_plugin_tb *tb);
typedef void (*vcpu_mem_cb)(unsigned int vcpu_index, qemu_plugin_meminfo_t info, uint64_t vaddr,
                            void *userdata);

extern void qemu_plugin_register_vcpu_tb_trans_cb(qemu_plugin_id_t id, tb_trans_cb cb);
extern void qemu_plugin_register_vcpu_tb_exec_cb(struct qemu_plugin_tb *tb, vcpu_udata_cb cb,
                                                 enum qemu_plugin_cb_flags flags, void *userdata);
extern void qemu_plugin_register_vcpu_insn_exec_cb(struct qemu_plugin_insn *insn, vcpu_udata_cb cb,
                                                   enum qemu_plugin_cb_flags flags, void *userdata);
extern void qemu_plugin_register_vcpu_mem_cb(struct qemu_plugin_insn *insn, vcpu_mem_cb cb,
                                             enum qemu_plugin_cb_flags flags,
                                             enum qemu_plugin_mem_rw rw, void *userdata);
extern void qemu_plugin_register_atexit_cb(qemu_plugin_id_t id, plugin_udata_cb cb, void *userdata);
extern size_t qemu_plugin_tb_n_insns(const struct qemu_plugin_tb *tb);
extern uint64_t qemu_plugin_tb_vaddr(const struct qemu_plugin_tb *tb);
extern struct qemu_plugin_insn *qemu_plugin_tb_get_insn(const struct qemu_plugin_tb *tb, size_t idx);
extern const void *qemu_plugin_insn_data(const struct qemu_plugin_insn *insn);
extern size_t qemu_plugin_insn_size(const struct qemu_plugin_insn *insn);
extern uint64_t qemu_plugin_insn_vaddr(const struct qemu_plugin_insn *insn);
extern void *qemu_plugin_insn_haddr(const struct qemu_plugin_insn *insn);
extern char *qemu_plugin_insn_disas(const struct qemu_plugin_insn *insn); /* caller frees */
extern unsigned int qemu_plugin_mem_size_shift(qemu_plugin_meminfo_t info);
extern bool qemu_plugin_mem_is_store(qemu_plugin_meminfo_t info);
extern struct qemu_plugin_hwaddr *qemu_plugin_get_hwaddr(qemu_plugin_meminfo_t info, uint64_t vaddr);
extern bool qemu_plugin_hwaddr_is_io(const struct qemu_plugin_hwaddr *haddr);
extern uint64_t qemu_plugin_hwaddr_phys_addr(const struct qemu_plugin_hwaddr *haddr);

#define EXPORT __attribute__((visibility("default")))
EXPORT int qemu_plugin_version = 1; /* QEMU 7.2 accepts versions 0..1 */

/* ---- State ------------------------------------------------------------------------------- */

#define LINE_SHIFT 6 /* Cortex-A7: 64-byte lines (CTR.DminLine = 4); QEMU reports the same */
#define PAGE_SIZE 4096u
#define MAX_VCPUS 8 /* the writer's vCPU is kept in 3 bits */
#define SEEN 64

/* Callback userdata carries an instruction address and a flag in one pointer. */
_Static_assert(sizeof(void *) >= sizeof(uint64_t), "a 64-bit host");

/*
 * One 64-bit word per line of guest RAM, 0 until the guest first stores to it:
 *   bits 63..32  the pc of the last store
 *   bits 31..4   epoch of the last store or clean
 *   bits  3..1   vCPU of the last store
 *   bit      0   written and not cleaned since
 * A whole word is written at once, so readers never see half an update. Calloc'd: the host
 * only backs the lines the guest writes.
 */
#define ST_DIRTY 1u
#define ST_VCPU(s) (((s) >> 1) & 7u)
#define ST_EPOCH(s) ((s) >> 4)
#define ST_MAKE(epoch, vcpu, dirty) (((uint32_t)(epoch) << 4) | (((vcpu) & 7u) << 1) | (dirty))

static uint64_t *lines;
static uint64_t nlines;
static uint64_t ram_bytes = 1024ull << 20;
static uint64_t kernel_offset = 0x80000000ull;
static unsigned max_reports = 10;
static unsigned nvcpus;

/* The epoch: advanced by each I-cache invalidation. A store or clean at epoch e is covered by
 * an invalidation that took epoch e (it was done before the invalidation). Starts at 1 so that
 * a store before a vCPU's first invalidation (its epoch 0) is not covered. */
static uint32_t epoch = 1;

/* Host address of guest physical 0 (0 until calibrated). */
static uintptr_t host_base;

/* Per vCPU, cache-line aligned: written by that vCPU's thread only, but for inv_epoch. */
struct vcpu {
    uint32_t inv_epoch;       /* the epoch of its last I-cache invalidation (others write it) */
    uint64_t stores;          /* stores to RAM seen */
    uint64_t unresolved;      /* stores whose physical address QEMU could not give */
    uint64_t cleans;          /* cleans by line seen (probe loads) */
    uint64_t checks;          /* block executions checked */
    uint64_t invalidations;   /* ICIALLU + ICIALLUIS executed */
    struct seen {             /* lines reported here lately, with their state word */
        uint64_t line, word;
    } seen[SEEN];
} __attribute__((aligned(64)));
static struct vcpu vcpus[MAX_VCPUS];

static uint64_t setup_errors; /* setup: lines */

#define LOAD(p) __atomic_load_n((p), __ATOMIC_RELAXED)
#define STORE(p, v) __atomic_store_n((p), (v), __ATOMIC_RELAXED)

/* ---- Decoding (ARM and Thumb-2 MCR to CP15, the ARM probe load) ---------------------------- */

enum op {
    OP_NONE,
    OP_ICIALLUIS, /* c7, c1, 0 */
    OP_ICIALLU,   /* c7, c5, 0 */
    OP_CLEAN,     /* DCCMVAU c7, c11, 1; DCCMVAC c7, c10, 1; DCCIMVAC c7, c14, 1 */
    OP_UNMODELLED /* ICIMVAU c7, c5, 1; DCCSW c7, c10, 2; DCCISW c7, c14, 2: would need more */
};

struct mcr {
    enum op op;
    unsigned rt;
    bool conditional;
    const char *name;
};

/* An MCR to CP15 in either instruction set. The ARM encoding is cond:1110:opc1:0:CRn | Rt:1111:
 * opc2:1:CRm; the Thumb-2 one has the same two halfwords (with 1110 for cond) in the opposite
 * order as a little-endian word. The two cannot be confused: bits 11:8 of the low halfword are
 * 1111 for ARM and 1110 for Thumb. */
static struct mcr decode_mcr(uint32_t w)
{
    struct mcr m = { OP_NONE, 0, false, NULL };
    uint32_t a;
    if ((w & 0x0f100f10u) == 0x0e000f10u) {
        a = w;
    } else if ((w & 0xff10u) == 0xee00u && (w & 0x0f100000u) == 0x0f100000u) {
        a = (w << 16) | (w >> 16);
    } else {
        return m;
    }
    unsigned opc1 = (a >> 21) & 7, crn = (a >> 16) & 15, opc2 = (a >> 5) & 7, crm = a & 15;
    if (opc1 != 0 || crn != 7) {
        return m;
    }
    m.rt = (a >> 12) & 15;
    m.conditional = (a >> 28) != 0xe;
    if (crm == 1 && opc2 == 0) {
        m.op = OP_ICIALLUIS, m.name = "ICIALLUIS";
    } else if (crm == 5 && opc2 == 0) {
        m.op = OP_ICIALLU, m.name = "ICIALLU";
    } else if (crm == 11 && opc2 == 1) {
        m.op = OP_CLEAN, m.name = "DCCMVAU";
    } else if (crm == 10 && opc2 == 1) {
        m.op = OP_CLEAN, m.name = "DCCMVAC";
    } else if (crm == 14 && opc2 == 1) {
        m.op = OP_CLEAN, m.name = "DCCIMVAC";
    } else if (crm == 5 && opc2 == 1) {
        m.op = OP_UNMODELLED, m.name = "ICIMVAU";
    } else if (crm == 10 && opc2 == 2) {
        m.op = OP_UNMODELLED, m.name = "DCCSW";
    } else if (crm == 14 && opc2 == 2) {
        m.op = OP_UNMODELLED, m.name = "DCCISW";
    }
    return m;
}

/* The probe: ARM `ldr Rt, [Rn]` (immediate offset 0, no writeback, always executed). Returns
 * Rn, or -1. */
static int probe_base(uint32_t w)
{
    return (w & 0xfff00fffu) == 0xe5900000u ? (int)((w >> 16) & 15) : -1;
}

static uint32_t word_at(const void *p)
{
    uint32_t w;
    memcpy(&w, p, 4);
    return w;
}

/* ---- Output --------------------------------------------------------------------------------- */

__attribute__((format(printf, 2, 3))) static void setup_error_once(bool *once, const char *fmt,
                                                                  ...)
{
    __atomic_add_fetch(&setup_errors, 1, __ATOMIC_RELAXED);
    if (!__atomic_exchange_n(once, true, __ATOMIC_RELAXED)) {
        char text[400];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(text, sizeof text, fmt, ap);
        va_end(ap);
        fprintf(stderr, "icache-check: setup: %s\n", text);
    }
}

enum kind { NOT_CLEANED, NOT_INVALIDATED };
static uint64_t reports[2]; /* distinct reports of each kind */

static void report(unsigned vcpu, uint64_t va, uint64_t line, uint64_t word)
{
    uint32_t st = (uint32_t)word;
    struct vcpu *v = &vcpus[vcpu];
    /* A stale block usually runs again and again: report a line in a given state once per
     * vCPU (as far as this small table remembers). */
    struct seen *s = &v->seen[line % SEEN];
    if (s->line == line && s->word == word) {
        return;
    }
    s->line = line, s->word = word;
    enum kind k = (st & ST_DIRTY) ? NOT_CLEANED : NOT_INVALIDATED;
    uint64_t n = __atomic_add_fetch(&reports[k], 1, __ATOMIC_RELAXED);
    if (n > max_reports) {
        if (n == max_reports + 1) {
            fprintf(stderr, "icache-check: (further reports of this kind are counted, not "
                            "printed)\n");
        }
        return;
    }
    char why[96];
    if (k == NOT_CLEANED) {
        snprintf(why, sizeof why, "without a D-cache clean by line (DCCMVAU/DCCMVAC/DCCIMVAC)");
    } else {
        snprintf(why, sizeof why, "without an I-cache invalidation on vcpu %u (ICIALLU/ICIALLUIS)",
                 vcpu);
    }
    fprintf(stderr,
            "icache-check: vcpu %u fetched 0x%08" PRIx64 " (phys 0x%08" PRIx64 ") written at pc "
            "0x%08" PRIx32 " (vcpu %u) %s since\n",
            vcpu, va, line << LINE_SHIFT, (uint32_t)(word >> 32), ST_VCPU(st), why);
}

/* ---- Callbacks at execution ------------------------------------------------------------- */

/* A store to RAM: the line is written and not cleaned. */
static void on_store(unsigned int vcpu, qemu_plugin_meminfo_t info, uint64_t va, uint32_t pc)
{
    struct qemu_plugin_hwaddr *hw = qemu_plugin_get_hwaddr(info, va);
    if (!hw) {
        vcpus[vcpu].unresolved++;
        return;
    }
    if (qemu_plugin_hwaddr_is_io(hw)) {
        return;
    }
    uint64_t pa = qemu_plugin_hwaddr_phys_addr(hw);
    uint64_t last = pa + (1u << qemu_plugin_mem_size_shift(info)) - 1;
    if (last >= ram_bytes) {
        return;
    }
    uint64_t word = ((uint64_t)pc << 32) | ST_MAKE(LOAD(&epoch), vcpu, ST_DIRTY);
    for (uint64_t l = pa >> LINE_SHIFT; l <= last >> LINE_SHIFT; l++) {
        STORE(&lines[l], word);
    }
    vcpus[vcpu].stores++;
}

/* The probe load in front of a clean by line: a line written since its last clean is now clean,
 * stamped now. A line with nothing to clean is left as it is: its data reached the I-side's
 * view at its last clean. */
static void on_probe(unsigned int vcpu, qemu_plugin_meminfo_t info, uint64_t va)
{
    struct qemu_plugin_hwaddr *hw = qemu_plugin_get_hwaddr(info, va);
    if (!hw || qemu_plugin_hwaddr_is_io(hw)) {
        return;
    }
    uint64_t pa = qemu_plugin_hwaddr_phys_addr(hw);
    if (pa >= ram_bytes) {
        return;
    }
    uint64_t *p = &lines[pa >> LINE_SHIFT];
    uint64_t old = LOAD(p), new;
    vcpus[vcpu].cleans++;
    do {
        uint32_t st = (uint32_t)old;
        if (!(st & ST_DIRTY)) {
            return;
        }
        new = (old & ~0xffffffffull) | ST_MAKE(LOAD(&epoch), ST_VCPU(st), 0);
    } while (!__atomic_compare_exchange_n(p, &old, new, true, __ATOMIC_RELAXED, __ATOMIC_RELAXED));
}

/* Every memory access of every instruction comes here; userdata is the instruction's address,
 * with ACCESS_PROBE set for a probe load. QEMU 7.2 does not filter callbacks by the access kind
 * they were registered for (one registered for loads is called for stores, one for stores is
 * called for both), so they are registered for both and sorted here. */
#define ACCESS_PROBE (1ull << 32)
static void on_access(unsigned int vcpu, qemu_plugin_meminfo_t info, uint64_t va, void *userdata)
{
    uint64_t ud = (uint64_t)(uintptr_t)userdata;
    if (vcpu >= nvcpus) {
        return;
    }
    if (qemu_plugin_mem_is_store(info)) {
        on_store(vcpu, info, va, (uint32_t)ud);
    } else if (ud & ACCESS_PROBE) {
        on_probe(vcpu, info, va);
    }
}

static void raise_inv_epoch(unsigned v, uint32_t e)
{
    uint32_t old = LOAD(&vcpus[v].inv_epoch);
    while (old < e && !__atomic_compare_exchange_n(&vcpus[v].inv_epoch, &old, e, true,
                                                   __ATOMIC_RELAXED, __ATOMIC_RELAXED)) {
    }
}

static void on_icache_invalidate(unsigned int vcpu, void *inner_shareable)
{
    if (vcpu >= nvcpus) {
        return;
    }
    uint32_t e = __atomic_fetch_add(&epoch, 1, __ATOMIC_RELAXED);
    if (inner_shareable) {
        for (unsigned v = 0; v < nvcpus; v++) {
            raise_inv_epoch(v, e);
        }
    } else {
        raise_inv_epoch(vcpu, e);
    }
    vcpus[vcpu].invalidations++;
}

/* The lines a translated block was fetched from, as runs of consecutive lines. */
struct run {
    uint64_t first, last; /* line numbers */
    uint64_t va, pa;      /* of the first instruction in the run */
};
struct block {
    unsigned nruns;
    struct run runs[];
};

static void on_block(unsigned int vcpu, void *userdata)
{
    const struct block *b = userdata;
    if (vcpu >= nvcpus) {
        return;
    }
    uint32_t inv = LOAD(&vcpus[vcpu].inv_epoch);
    for (unsigned i = 0; i < b->nruns; i++) {
        const struct run *r = &b->runs[i];
        for (uint64_t l = r->first; l <= r->last; l++) {
            uint64_t word = LOAD(&lines[l]);
            uint32_t st = (uint32_t)word;
            if (st != 0 && ((st & ST_DIRTY) || ST_EPOCH(st) > inv)) {
                uint64_t line_pa = l << LINE_SHIFT;
                uint64_t va = r->va + (line_pa > r->pa ? line_pa - r->pa : 0);
                report(vcpu, va, l, word);
            }
        }
    }
    vcpus[vcpu].checks++;
}

/* ---- Translation -------------------------------------------------------------------------- */

static bool once_no_probe, once_unmodelled, once_conditional, once_calibration;

/* The physical address of an instruction's host copy, or UINT64_MAX (not in guest RAM, or the
 * base not known yet). */
static uint64_t insn_pa(const struct qemu_plugin_insn *insn)
{
    uintptr_t h = (uintptr_t)qemu_plugin_insn_haddr(insn), base = LOAD(&host_base);
    if (!h || !base || h < base || h - base >= ram_bytes) {
        return UINT64_MAX;
    }
    return h - base;
}

/* Guest RAM is one host allocation; find where it starts from a block of the kernel's own code,
 * which runs in the direct map at PA + kernel-offset, and check every later such block agrees. */
static void calibrate(uint64_t va, const struct qemu_plugin_insn *first)
{
    uintptr_t h = (uintptr_t)qemu_plugin_insn_haddr(first);
    if (!h || va < kernel_offset || va - kernel_offset >= ram_bytes) {
        return;
    }
    uintptr_t base = h - (uintptr_t)(va - kernel_offset), none = 0;
    if (!__atomic_compare_exchange_n(&host_base, &none, base, false, __ATOMIC_RELAXED,
                                     __ATOMIC_RELAXED) &&
        none != base) {
        setup_error_once(&once_calibration,
                         "the kernel block at 0x%08" PRIx64 " is not at PA = VA - "
                         "kernel-offset in the host copy of RAM (wrong kernel-offset?)",
                         va);
    }
}

static void on_translate(qemu_plugin_id_t id, struct qemu_plugin_tb *tb)
{
    (void)id;
    size_t n = qemu_plugin_tb_n_insns(tb);
    uint64_t tb_va = qemu_plugin_tb_vaddr(tb);
    struct run runs[n ? n : 1];
    unsigned nruns = 0;
    bool written = false;

    if (n == 0) {
        return;
    }
    calibrate(tb_va, qemu_plugin_tb_get_insn(tb, 0));
    for (size_t i = 0; i < n; i++) {
        struct qemu_plugin_insn *insn = qemu_plugin_tb_get_insn(tb, i);
        uint64_t va = qemu_plugin_insn_vaddr(insn);
        size_t size = qemu_plugin_insn_size(insn);


        uint64_t pa = insn_pa(insn);
        if (pa != UINT64_MAX && pa + size <= ram_bytes) {
            uint64_t first = pa >> LINE_SHIFT, last = (pa + size - 1) >> LINE_SHIFT;
            struct run *r = nruns ? &runs[nruns - 1] : NULL;
            if (r && first >= r->first && first <= r->last + 1) {
                r->last = last > r->last ? last : r->last;
            } else {
                runs[nruns++] = (struct run){ first, last, va, pa };
            }
            for (uint64_t l = first; l <= last; l++) {
                written |= LOAD(&lines[l]) != 0;
            }
        }

        uint32_t w = size == 4 ? word_at(qemu_plugin_insn_data(insn)) : 0;
        const uint8_t *h = qemu_plugin_insn_haddr(insn);
        unsigned in_page = (unsigned)(va & (PAGE_SIZE - 1));
        uint64_t ud = (uint32_t)va;

        int base = probe_base(w);
        if (base >= 0 && h && in_page <= PAGE_SIZE - 8) {
            /* Read the next word from guest memory, not from this block: the block may end
             * between the probe and its clean. */
            struct mcr m = decode_mcr(word_at(h + 4));
            if (m.op == OP_CLEAN && !m.conditional && (int)m.rt == base) {
                ud |= ACCESS_PROBE;
            }
        }
        qemu_plugin_register_vcpu_mem_cb(insn, on_access, QEMU_PLUGIN_CB_NO_REGS,
                                         QEMU_PLUGIN_MEM_RW, (void *)(uintptr_t)ud);
        if (size != 4) {
            continue;
        }

        struct mcr m = decode_mcr(w);
        if (m.op == OP_NONE) {
            continue;
        }
        /* Bit patterns alone could take a Thumb NEON instruction for an ARM MCR: the
         * disassembler knows which instruction set this block is in. */
        char *text = qemu_plugin_insn_disas(insn);
        bool is_mcr = text && strncmp(text, "mcr", 3) == 0;
        free(text);
        if (!is_mcr) {
            continue;
        }
        if (m.conditional) {
            setup_error_once(&once_conditional,
                             "conditional %s at 0x%08" PRIx64 ": not modelled (make it "
                             "unconditional)",
                             m.name, va);
            continue;
        }
        switch (m.op) {
        case OP_ICIALLUIS:
        case OP_ICIALLU:
            qemu_plugin_register_vcpu_insn_exec_cb(insn, on_icache_invalidate,
                                                   QEMU_PLUGIN_CB_NO_REGS,
                                                   m.op == OP_ICIALLUIS ? (void *)1 : NULL);
            break;
        case OP_CLEAN: {
            bool probed = h && in_page >= 4 && probe_base(word_at(h - 4)) == (int)m.rt;
            if (!probed) {
                setup_error_once(&once_no_probe,
                                 "%s at 0x%08" PRIx64 " has no probe load (ldr rT, [rA]) right "
                                 "before it, so the lines it cleans are not seen (a kernel "
                                 "without the cache-audit feature?)",
                                 m.name, va);
            }
            break;
        }
        case OP_UNMODELLED:
            setup_error_once(&once_unmodelled,
                             "%s at 0x%08" PRIx64 " is not modelled by this plugin", m.name, va);
            break;
        default:
            break;
        }
    }

    /* Blocks of the kernel's image that the guest never wrote need no check: a store into one
     * of their lines would make QEMU drop the block, and its next translation sees the store.
     * Every other block is checked each time it runs. */
    bool kernel_map = tb_va >= kernel_offset && tb_va - kernel_offset < ram_bytes;
    if (nruns == 0 || (kernel_map && !written)) {
        return;
    }
    struct block *b = malloc(sizeof *b + nruns * sizeof b->runs[0]);
    if (!b) {
        fprintf(stderr, "icache-check: out of memory\n");
        abort();
    }
    b->nruns = nruns;
    memcpy(b->runs, runs, nruns * sizeof runs[0]);
    qemu_plugin_register_vcpu_tb_exec_cb(tb, on_block, QEMU_PLUGIN_CB_NO_REGS, b);
}

/* ---- Set-up and summary ------------------------------------------------------------------- */

static void on_exit_summary(qemu_plugin_id_t id, void *unused)
{
    (void)id, (void)unused;
    uint64_t stores = 0, unresolved = 0, cleans = 0, checks = 0, inv = 0;
    for (unsigned v = 0; v < nvcpus; v++) {
        stores += vcpus[v].stores, unresolved += vcpus[v].unresolved;
        cleans += vcpus[v].cleans, checks += vcpus[v].checks, inv += vcpus[v].invalidations;
    }
    if (!LOAD(&host_base)) {
        __atomic_add_fetch(&setup_errors, 1, __ATOMIC_RELAXED);
        fprintf(stderr, "icache-check: setup: no kernel code ran at kernel-offset 0x%" PRIx64
                        ", so no fetch was placed in RAM or checked\n",
                kernel_offset);
    }
    fprintf(stderr,
            "icache-check: summary: %" PRIu64 " stores to RAM (%" PRIu64 " unresolved), %" PRIu64
            " cleans by line, %" PRIu64 " I-cache invalidations, %" PRIu64 " block runs "
            "checked, %" PRIu64 " reports (%" PRIu64 " not cleaned, %" PRIu64 " not "
            "invalidated), %" PRIu64 " setup errors\n",
            stores, unresolved, cleans, inv, checks, LOAD(&reports[0]) + LOAD(&reports[1]),
            LOAD(&reports[NOT_CLEANED]), LOAD(&reports[NOT_INVALIDATED]), LOAD(&setup_errors));
}

static bool parse_u64(const char *s, uint64_t *out)
{
    char *end;
    unsigned long long v = strtoull(s, &end, 0);
    if (*s == '\0' || *end != '\0') {
        return false;
    }
    *out = v;
    return true;
}

EXPORT int qemu_plugin_install(qemu_plugin_id_t id, const qemu_info_t *info, int argc, char **argv)
{
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i], *eq = strchr(a, '=');
        uint64_t v;
        if (!eq || !parse_u64(eq + 1, &v)) {
            fprintf(stderr, "icache-check: bad argument '%s' (name=number)\n", a);
            return -1;
        }
        if (strncmp(a, "max-reports=", 12) == 0) {
            max_reports = (unsigned)v;
        } else if (strncmp(a, "kernel-offset=", 14) == 0) {
            kernel_offset = v;
        } else if (strncmp(a, "ram-mib=", 8) == 0 && v > 0 && v <= 4096) {
            ram_bytes = v << 20;
        } else {
            fprintf(stderr, "icache-check: unknown argument '%s'\n", a);
            return -1;
        }
    }
    if (!info->system_emulation) {
        fprintf(stderr, "icache-check: needs system emulation (physical addresses)\n");
        return -1;
    }
    if (info->system.max_vcpus > MAX_VCPUS) {
        fprintf(stderr, "icache-check: at most %d vCPUs\n", MAX_VCPUS);
        return -1;
    }
    nvcpus = (unsigned)info->system.max_vcpus;
    nlines = ram_bytes >> LINE_SHIFT;
    lines = calloc(nlines, sizeof *lines);
    if (!lines) {
        fprintf(stderr, "icache-check: cannot allocate the line table\n");
        return -1;
    }
    qemu_plugin_register_vcpu_tb_trans_cb(id, on_translate);
    qemu_plugin_register_atexit_cb(id, on_exit_summary, NULL);
    return 0;
}

/*
 * Driver-like integer kernels for the translator benchmark (tests/benches/kernels.rs).
 *
 * The same source is built four ways by build.sh: as x86-64 and i386 Linux ELF programs (with
 * native_main.c) and as x64 and x86 PE driver images (with pe_entry.c) for the translator.  Each
 * kernel builds its own input deterministically (static buffers, an LCG reset on every call), does
 * its work `iterations` times and returns a checksum of the result, so the compiler cannot drop the
 * work and the three runners (native, qemu-user, translator) can be checked to compute the same
 * value.  Plain integer code: no libc, no floating point, no 64-bit division.
 */

#if defined(_WIN32) && !defined(_WIN64)
/* cdecl: arguments on the stack, caller pops; exported undecorated ("kernel_mix"). */
#define KERNEL_EXPORT __declspec(dllexport) __attribute__((cdecl))
#elif defined(_WIN32)
#define KERNEL_EXPORT __declspec(dllexport)
#else
#define KERNEL_EXPORT
#endif

#define NOINLINE __attribute__((noinline))

typedef unsigned char u8;
typedef unsigned short u16;
typedef unsigned int u32;
typedef short s16;

static u32 lcg_state;

static void lcg_seed(u32 seed)
{
    lcg_state = seed;
}

static u32 lcg(void)
{
    lcg_state = lcg_state * 1664525u + 1013904223u;
    return lcg_state >> 8;
}

/* ------------------------------------------------------------------------------------------- */
/* 1. Internet checksum (RFC 1071) over 1500-byte packets, the way a NIC driver without checksum
 *    offload fills the IPv4 header checksum on send and verifies it on receive: 16-bit words added
 *    into a 32-bit accumulator, folded to 16 bits, complemented. */

#define PKT_BYTES 1500
#define PKT_WORDS (PKT_BYTES / 2)
#define NPKT 16
#define CSUM_WORD 5 /* offset 10: the IPv4 header checksum field */
#define ID_WORD 2   /* offset 4: the IPv4 identification field */

static u16 packets[NPKT][PKT_WORDS];

static NOINLINE u16 inet_checksum(const u16 *p, u32 bytes)
{
    u32 sum = 0;
    while (bytes > 1) {
        sum += *p++;
        bytes -= 2;
    }
    if (bytes)
        sum += *(const u8 *)p;
    sum = (sum >> 16) + (sum & 0xffff);
    sum += sum >> 16;
    return (u16)~sum;
}

KERNEL_EXPORT u32 kernel_checksum(u32 iterations)
{
    u32 i, k, acc = 0, bad = 0;

    lcg_seed(0x1500);
    for (i = 0; i < NPKT; i++)
        for (k = 0; k < PKT_WORDS; k++)
            packets[i][k] = (u16)lcg();

    for (i = 0; i < iterations; i++) {
        u16 *pkt = packets[i % NPKT];
        /* send: new identification, checksum field zero, then fill it in */
        pkt[ID_WORD] = (u16)i;
        pkt[CSUM_WORD] = 0;
        pkt[CSUM_WORD] = inet_checksum(pkt, PKT_BYTES);
        /* receive: a correct packet sums to zero */
        if (inet_checksum(pkt, PKT_BYTES) != 0)
            bad++;
        acc = (acc << 5 | acc >> 27) ^ pkt[CSUM_WORD];
    }
    return acc ^ bad << 16;
}

/* ------------------------------------------------------------------------------------------- */
/* 2. PCM mixing, as in an audio miniport's software mixer: two 16-bit streams (read with
 *    wrap-around from their source buffers), each scaled by a Q15 volume, summed, clamped to
 *    int16 and written into a ring buffer with a wrap-around write index, one 10 ms period
 *    (480 stereo frames at 48 kHz) per iteration. */

#define SRC_A_LEN 4801
#define SRC_B_LEN 3907
#define RING_LEN 6144
#define PERIOD 960

static s16 src_a[SRC_A_LEN];
static s16 src_b[SRC_B_LEN];
static s16 ring[RING_LEN];

KERNEL_EXPORT u32 kernel_mix(u32 iterations)
{
    u32 i, k, ra = 0, rb = 0, w = 0, clipped = 0, acc = 0;

    lcg_seed(0x48000);
    for (k = 0; k < SRC_A_LEN; k++)
        src_a[k] = (s16)lcg();
    for (k = 0; k < SRC_B_LEN; k++)
        src_b[k] = (s16)(lcg() >> 1); /* quieter stream */
    for (k = 0; k < RING_LEN; k++)
        ring[k] = 0;

    for (i = 0; i < iterations; i++) {
        int vol_a = 0x5000 + (int)(i & 0x1fff); /* Q15, ramping */
        int vol_b = 0x7fff - (int)(i & 0x0fff);
        for (k = 0; k < PERIOD; k++) {
            int s = ((src_a[ra] * vol_a) >> 15) + ((src_b[rb] * vol_b) >> 15);
            if (s > 32767) {
                s = 32767;
                clipped++;
            } else if (s < -32768) {
                s = -32768;
                clipped++;
            }
            ring[w] = (s16)s;
            if (++w == RING_LEN)
                w = 0;
            if (++ra == SRC_A_LEN)
                ra = 0;
            if (++rb == SRC_B_LEN)
                rb = 0;
        }
    }
    for (k = 0; k < RING_LEN; k++)
        acc = acc * 31 + (u16)ring[k];
    return acc ^ clipped ^ w << 20;
}

/* ------------------------------------------------------------------------------------------- */
/* 3. Descriptor ring walk, as in a NIC driver's receive DPC: a ring of descriptors with
 *    status/length/buffer fields; the "device" completes a batch, then the driver walks from its
 *    head index while descriptors are done, accounting each packet and handing the descriptor back,
 *    with small non-inlined helpers per descriptor. */

#define NDESC 256
#define BUF_BYTES 128
#define DESC_OWN 0x80000000u /* owned by the device */
#define DESC_DONE 0x00000001u
#define DESC_ERR 0x00000002u

struct desc {
    u32 status;
    u16 length;
    u16 flags;
    u8 *buffer;
    u32 cookie;
};

struct rx_stats {
    u32 packets;
    u32 bytes;
    u32 errors;
    u32 hash;
};

static struct desc descs[NDESC];
static u8 buffers[NDESC][BUF_BYTES];
static u32 hw_tail;

/* The device side: completes up to n descriptors it owns, writing a small packet into each. */
static NOINLINE void hw_complete(u32 n)
{
    while (n--) {
        struct desc *d = &descs[hw_tail];
        u32 r, len;
        if (!(d->status & DESC_OWN))
            break;
        r = lcg();
        len = 16 + (r & 0x7f) % (BUF_BYTES - 16 + 1);
        d->length = (u16)len;
        d->buffer[0] = (u8)r;
        d->buffer[len - 1] = (u8)(r >> 8);
        d->status = (r & 0x3f00) == 0 ? DESC_DONE | DESC_ERR : DESC_DONE;
        if (++hw_tail == NDESC)
            hw_tail = 0;
    }
}

static NOINLINE int desc_ready(const struct desc *d)
{
    return (d->status & (DESC_OWN | DESC_DONE)) == DESC_DONE;
}

static NOINLINE void rx_account(struct rx_stats *s, const struct desc *d)
{
    const u8 *b = d->buffer;
    if (d->status & DESC_ERR) {
        s->errors++;
        return;
    }
    s->packets++;
    s->bytes += d->length;
    s->hash = (s->hash * 33) ^ b[0] ^ (u32)b[d->length - 1] << 8;
}

static NOINLINE void desc_give_back(struct desc *d, u32 index)
{
    d->status = DESC_OWN;
    d->length = 0;
    d->cookie = index;
}

KERNEL_EXPORT u32 kernel_ring(u32 iterations)
{
    struct rx_stats st = {0, 0, 0, 0};
    u32 i, head = 0;

    lcg_seed(0xd15c);
    hw_tail = 0;
    for (i = 0; i < NDESC; i++) {
        descs[i].status = DESC_OWN;
        descs[i].length = 0;
        descs[i].flags = 0;
        descs[i].buffer = buffers[i];
        descs[i].cookie = i;
    }

    for (i = 0; i < iterations; i++) {
        hw_complete(24 + (lcg() & 31));
        while (desc_ready(&descs[head])) {
            rx_account(&st, &descs[head]);
            desc_give_back(&descs[head], head);
            if (++head == NDESC)
                head = 0;
        }
    }
    return st.hash ^ st.packets << 8 ^ st.bytes << 3 ^ st.errors << 24 ^ head;
}

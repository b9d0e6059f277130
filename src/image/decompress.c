/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Streaming layer decompression (see decompress.h). This is on the hot path of every pull, so:
 * - raw tar ("none") is passed through without a copy (the source's chunk is handed on as is);
 * - gzip uses ISA-L's igzip inflate (several times zlib's speed) straight into a 1 MiB output buffer;
 *   zlib is the fallback when berth is built without ISA-L (and in tests, to cover both paths);
 * - zstd uses the streaming ZSTD_decompressStream into the same buffer.
 * Each read fills the whole output buffer unless the stream ends, so the consumer (libarchive in
 * unpack.c) sees few large chunks; tiny source chunks are gathered before inflating (see dec_fill).
 * Measured on this machine (2.5 GB tar, 810 MB gzip -6): decompressor_read runs at igzip -dc's CPU
 * time (3.3-3.6 s user for both).
 */
#include <stdint.h>
#include <string.h>
#include <zlib.h>
#include <zstd.h>
#ifdef HAVE_ISAL
#include <isa-l/igzip_lib.h>
#endif

#include "image/decompress.h"

#ifndef DECOMPRESS_OUT_SIZE
#define DECOMPRESS_OUT_SIZE (1024 * 1024)
#endif
#ifndef DECOMPRESS_GATHER_BELOW
#define DECOMPRESS_GATHER_BELOW (64 * 1024) /* source chunks smaller than this are gathered ... */
#endif
#define DECOMPRESS_IN_TARGET (256 * 1024)  /* ... until at least this much is at hand ... */
#define DECOMPRESS_IN_SIZE   (1024 * 1024) /* ... in a buffer of this size */
#define SNIFF_LEN            6             /* the longest magic we look at (xz) */

enum dec_format {
        DEC_UNKNOWN = 0,
        DEC_NONE,
        DEC_GZIP,
        DEC_ZSTD,
};

/*
 * Where the compressed stream stands between frames/members. A gzip blob may hold several members
 * and, after the last one, zero padding (some generators pad blobs; umoci 0.4.7 notes it); zstd may
 * hold several frames (zstd:chunked adds skippable ones). Anything else after a complete member or
 * frame is corrupt data.
 */
enum dec_state {
        DEC_IN_FRAME,    /* inside a gzip member / zstd frame */
        DEC_AT_BOUNDARY, /* a member/frame just ended: another one, zero padding or EOF follows */
        DEC_IN_PADDING,  /* zero padding: only zeros may follow until EOF */
        DEC_DONE,        /* the source reported EOF at a valid end */
};

/* Tests set this to run the zlib path even when ISA-L is compiled in. */
BERTH_STATIC bool decompress_force_zlib;

struct decompressor {
        stream_source_fn src;
        void *userdata;
        enum layer_compression declared;
        enum dec_format fmt;
        enum dec_state state;
        bool src_eof;
        int failed;        /* the first error returned: reads after it return it again */
        bool out_was_full; /* the last decoder step filled its output: it may hold more without new input */

        /* Input not yet consumed: the sniff buffer, the rest of a source chunk (valid until the next
         * source call), a whole source chunk, or inbuf holding gathered small chunks. */
        const uint8_t *in;
        size_t in_len;
        uint8_t sniff[SNIFF_LEN];
        size_t sniff_len;
        bool sniff_pending; /* sniff[] still has to be handed out before `rest` */
        const uint8_t *rest;
        size_t rest_len;

        uint8_t *out;   /* DECOMPRESS_OUT_SIZE bytes, owned; NULL for "none" */
        uint8_t *inbuf; /* DECOMPRESS_IN_SIZE bytes for gathering small source chunks; NULL for "none" */
        bool use_zlib;
#ifdef HAVE_ISAL
        struct inflate_state *isal;
#endif
        z_stream *z;
        ZSTD_DCtx *zstd;
};

int decompressor_new(enum layer_compression declared, stream_source_fn src, void *userdata,
                     struct decompressor **ret, struct berr **err)
{
        if (!src || !ret)
                return berr_set(err, -EINVAL, "decompressor: no source");
        struct decompressor *d = xcalloc(1, sizeof(*d));
        d->src = src;
        d->userdata = userdata;
        d->declared = declared;
        *ret = d;
        return 0;
}

void decompressor_free(struct decompressor *d)
{
        if (!d)
                return;
#ifdef HAVE_ISAL
        free(d->isal);
#endif
        if (d->z) {
                inflateEnd(d->z);
                free(d->z);
        }
        ZSTD_freeDCtx(d->zstd);
        free(d->out);
        free(d->inbuf);
        free(d);
}

const char *decompressor_format(const struct decompressor *d)
{
        switch (d ? d->fmt : DEC_UNKNOWN) {
        case DEC_NONE:
                return "none";
        case DEC_GZIP:
                return "gzip";
        case DEC_ZSTD:
                return "zstd";
        default:
                return "unknown";
        }
}

/* Pull one chunk from the source; 0 at EOF (remembered, the source is not called again). */
static ssize_t dec_pull(struct decompressor *d, const void **ret_buf, struct berr **err)
{
        if (d->src_eof)
                return 0;
        ssize_t n = d->src(d->userdata, ret_buf, err);
        if (n < 0)
                return n;
        if (n == 0)
                d->src_eof = true;
        return n;
}

/*
 * Make d->in/d->in_len the next piece of unconsumed input: the sniffed bytes first, then the rest of the
 * chunk the sniff stopped in, then fresh source chunks. Returns >0, 0 at EOF, or <0.
 */
static ssize_t dec_fill(struct decompressor *d, struct berr **err)
{
        if (d->sniff_pending) {
                d->sniff_pending = false;
                if (d->sniff_len > 0) {
                        d->in = d->sniff;
                        d->in_len = d->sniff_len;
                        return (ssize_t)d->in_len;
                }
        }
        if (d->rest_len > 0) {
                d->in = d->rest;
                d->in_len = d->rest_len;
                d->rest = NULL;
                d->rest_len = 0;
                return (ssize_t)d->in_len;
        }
        const void *buf = NULL;
        ssize_t n = dec_pull(d, &buf, err);
        if (n <= 0) {
                d->in = NULL;
                d->in_len = 0;
                return n;
        }
        if (!d->inbuf || (size_t)n >= DECOMPRESS_GATHER_BELOW) {
                d->in = buf;
                d->in_len = (size_t)n;
                return n;
        }
        /*
         * A small chunk (curl hands out what arrived, often 16 KiB): gather chunks into inbuf until
         * DECOMPRESS_IN_TARGET bytes. Inflaters pay a slow path at every end of input (the last bytes
         * cannot be decoded with the fast loop): with 16 KiB chunks igzip needs ~12% more CPU, more
         * than copying the (still cache-hot) compressed bytes costs. Larger chunks are used in place:
         * an extra pass over them would cost more than it saves.
         */
        size_t len = 0;
        for (;;) {
                size_t take = MIN((size_t)n, (size_t)DECOMPRESS_IN_SIZE - len);
                memcpy(d->inbuf + len, buf, take);
                len += take;
                if (take < (size_t)n) {
                        d->rest = (const uint8_t *)buf + take;
                        d->rest_len = (size_t)n - take;
                        break;
                }
                if (len >= DECOMPRESS_IN_TARGET)
                        break;
                n = dec_pull(d, &buf, err);
                if (n < 0)
                        return n;
                if (n == 0)
                        break;
        }
        d->in = d->inbuf;
        d->in_len = len;
        return (ssize_t)len;
}

static bool is_gzip(const uint8_t *m, size_t n)
{
        return n >= 2 && m[0] == 0x1f && m[1] == 0x8b;
}

/* A zstd frame, or a skippable frame (0x184D2A50..5F little-endian) such as zstd:chunked writes. */
static bool is_zstd(const uint8_t *m, size_t n)
{
        if (n < 4)
                return false;
        if (m[0] == 0x28 && m[1] == 0xb5 && m[2] == 0x2f && m[3] == 0xfd)
                return true;
        return (m[0] & 0xf0) == 0x50 && m[1] == 0x2a && m[2] == 0x4d && m[3] == 0x18;
}

/*
 * Read the first SNIFF_LEN bytes (or fewer at EOF) and pick the format from them. Usually the first
 * chunk is long enough and nothing is copied: the whole chunk becomes `rest`. Only when the source
 * hands out tiny chunks are the first bytes gathered in d->sniff.
 */
static int dec_sniff(struct decompressor *d, struct berr **err)
{
        const uint8_t *magic = NULL;
        size_t have = 0;
        while (have < SNIFF_LEN) {
                const void *buf = NULL;
                ssize_t n = dec_pull(d, &buf, err);
                if (n < 0)
                        return (int)berr_prefix(err, (int)n, "reading layer");
                if (n == 0)
                        break;
                if (have == 0 && (size_t)n >= SNIFF_LEN) {
                        magic = buf;
                        have = (size_t)n;
                        d->rest = buf;
                        d->rest_len = (size_t)n;
                        break;
                }
                size_t take = MIN((size_t)n, SNIFF_LEN - have);
                memcpy(d->sniff + have, buf, take);
                have += take;
                d->sniff_len = have;
                d->rest = (const uint8_t *)buf + take;
                d->rest_len = (size_t)n - take;
                magic = d->sniff;
        }
        d->sniff_pending = d->sniff_len > 0;

        static const uint8_t xz[6] = { 0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00 };
        if (have >= 6 && memcmp(magic, xz, 6) == 0)
                return berr_set(err, -EPROTONOSUPPORT, "xz-compressed layers are not supported");
        if (have >= 4 && memcmp(magic, "BZh", 3) == 0 && magic[3] >= '1' && magic[3] <= '9')
                return berr_set(err, -EPROTONOSUPPORT, "bzip2-compressed layers are not supported");

        /* The bytes win over the declared media type (a mislabelled layer still unpacks). */
        if (is_gzip(magic, have))
                d->fmt = DEC_GZIP;
        else if (is_zstd(magic, have))
                d->fmt = DEC_ZSTD;
        else
                d->fmt = DEC_NONE;
        d->state = DEC_IN_FRAME;

        if (d->fmt == DEC_NONE)
                return 0;
        d->out = xmalloc(DECOMPRESS_OUT_SIZE);
        d->inbuf = xmalloc(DECOMPRESS_IN_SIZE);
        if (d->fmt == DEC_ZSTD) {
                d->zstd = ZSTD_createDCtx();
                if (!d->zstd)
                        return berr_set(err, -ENOMEM, "zstd: cannot create a decompression context");
                return 0;
        }
#ifdef HAVE_ISAL
        d->use_zlib = decompress_force_zlib;
#else
        d->use_zlib = true;
#endif
        if (d->use_zlib) {
                d->z = xcalloc(1, sizeof(*d->z));
                /* 15 window bits + 16: gzip wrapper only, CRC-32 and ISIZE checked by zlib. */
                if (inflateInit2(d->z, 15 + 16) != Z_OK) {
                        free(d->z);
                        d->z = NULL;
                        return berr_set(err, -ENOMEM, "gzip: cannot initialise zlib");
                }
        }
#ifdef HAVE_ISAL
        else {
                d->isal = xmalloc(sizeof(*d->isal));
                isal_inflate_init(d->isal);
                d->isal->crc_flag = ISAL_GZIP; /* parse the header, verify CRC-32 and ISIZE */
        }
#endif
        return 0;
}

#ifdef HAVE_ISAL
static const char *isal_strerror(int r)
{
        switch (r) {
        case ISAL_INVALID_BLOCK:
                return "invalid deflate block";
        case ISAL_INVALID_SYMBOL:
                return "invalid deflate symbol";
        case ISAL_INVALID_LOOKBACK:
                return "invalid back-reference distance";
        case ISAL_INVALID_WRAPPER:
                return "invalid gzip header";
        case ISAL_UNSUPPORTED_METHOD:
                return "unsupported compression method";
        case ISAL_INCORRECT_CHECKSUM:
                return "CRC-32 or length mismatch";
        case ISAL_NEED_DICT:
                return "preset dictionary required";
        default:
                return "corrupt data";
        }
}
#endif

/*
 * Run one step of the gzip or zstd decoder over d->in into out[0..cap). Returns the bytes written,
 * and sets *frame_end when a gzip member or zstd frame is complete and fully flushed.
 */
static ssize_t dec_step(struct decompressor *d, uint8_t *out, size_t cap, bool *frame_end, struct berr **err)
{
        *frame_end = false;
        if (d->fmt == DEC_ZSTD) {
                ZSTD_inBuffer in = { d->in, d->in_len, 0 };
                ZSTD_outBuffer o = { out, cap, 0 };
                size_t r = ZSTD_decompressStream(d->zstd, &o, &in);
                if (ZSTD_isError(r))
                        return berr_set(err, -EBADMSG, "zstd: corrupt layer data: %s", ZSTD_getErrorName(r));
                d->in += in.pos;
                d->in_len -= in.pos;
                *frame_end = r == 0;
                if (in.pos == 0 && o.pos == 0 && !*frame_end && d->in_len > 0)
                        return berr_set(err, -EBADMSG, "zstd: decoder made no progress");
                return (ssize_t)o.pos;
        }
        if (d->use_zlib) {
                z_stream *z = d->z;
                uInt avail_in = (uInt)MIN(d->in_len, (size_t)UINT32_MAX);
                z->next_in = (Bytef *)d->in;
                z->avail_in = avail_in;
                z->next_out = out;
                z->avail_out = (uInt)cap;
                int r = inflate(z, Z_NO_FLUSH);
                size_t used = avail_in - z->avail_in, made = cap - z->avail_out;
                d->in += used;
                d->in_len -= used;
                if (r == Z_STREAM_END) {
                        *frame_end = true;
                        inflateReset(z);
                } else if (r == Z_DATA_ERROR || r == Z_NEED_DICT) {
                        return berr_set(err, -EBADMSG, "gzip: corrupt layer data: %s",
                                        z->msg ? z->msg : "invalid data");
                } else if (r == Z_MEM_ERROR) {
                        return berr_set(err, -ENOMEM, "gzip: out of memory");
                } else if (r != Z_OK && !(r == Z_BUF_ERROR && d->in_len == 0)) {
                        return berr_set(err, -EBADMSG, "gzip: decoder error %d", r);
                }
                if (used == 0 && made == 0 && !*frame_end && d->in_len > 0)
                        return berr_set(err, -EBADMSG, "gzip: decoder made no progress");
                return (ssize_t)made;
        }
#ifdef HAVE_ISAL
        struct inflate_state *s = d->isal;
        uint32_t avail_in = (uint32_t)MIN(d->in_len, (size_t)UINT32_MAX);
        s->next_in = (uint8_t *)d->in;
        s->avail_in = avail_in;
        s->next_out = out;
        s->avail_out = (uint32_t)cap;
        int r = isal_inflate(s);
        size_t used = avail_in - s->avail_in, made = cap - s->avail_out;
        d->in += used;
        d->in_len -= used;
        if (r < 0)
                return berr_set(err, -EBADMSG, "gzip: corrupt layer data: %s", isal_strerror(r));
        if (s->block_state == ISAL_BLOCK_FINISH) {
                /* ISA-L leaves next_in just after the member's trailer: ready for the next member. */
                *frame_end = true;
                isal_inflate_reset(s);
        } else if (used == 0 && made == 0 && d->in_len > 0) {
                return berr_set(err, -EBADMSG, "gzip: decoder made no progress");
        }
        return (ssize_t)made;
#else
        return berr_set(err, -EINVAL, "gzip: no decoder");
#endif
}

/* Decode into d->out until it is full or the stream ends. */
/* One decoder step into the rest of the output buffer; notes a full buffer and the end of a frame. */
static ssize_t dec_step_out(struct decompressor *d, size_t *produced, struct berr **err)
{
        size_t offer = DECOMPRESS_OUT_SIZE - *produced;
        bool frame_end = false;
        ssize_t n = dec_step(d, d->out + *produced, offer, &frame_end, err);
        if (n < 0)
                return n;
        *produced += (size_t)n;
        d->out_was_full = (size_t)n == offer && !frame_end;
        if (frame_end)
                d->state = DEC_AT_BOUNDARY;
        return n;
}

static ssize_t dec_read_compressed(struct decompressor *d, struct berr **err)
{
        const char *what = d->fmt == DEC_GZIP ? "gzip" : "zstd";
        size_t produced = 0;
        while (produced < DECOMPRESS_OUT_SIZE && d->state != DEC_DONE) {
                if (d->in_len == 0 && d->state == DEC_IN_FRAME && d->out_was_full) {
                        /* Drain what the decoder still holds before asking for input (or judging EOF). */
                        ssize_t n = dec_step_out(d, &produced, err);
                        if (n < 0)
                                return n;
                        continue;
                }
                if (d->in_len == 0) {
                        ssize_t n = dec_fill(d, err);
                        if (n < 0)
                                return berr_prefix(err, (int)n, "reading layer");
                        if (n == 0) {
                                if (d->state == DEC_IN_FRAME)
                                        return berr_set(err, -EBADMSG, "%s: truncated layer data", what);
                                d->state = DEC_DONE;
                                break;
                        }
                }
                if (d->state == DEC_AT_BOUNDARY) {
                        if (d->in[0] == 0) {
                                d->state = DEC_IN_PADDING;
                        } else if ((d->fmt == DEC_GZIP && d->in[0] == 0x1f) || d->fmt == DEC_ZSTD) {
                                /* Another member or frame (zstd itself rejects a bad magic). */
                                d->state = DEC_IN_FRAME;
                        } else {
                                return berr_set(err, -EBADMSG,
                                                "%s: unexpected data after the end of the stream", what);
                        }
                }
                if (d->state == DEC_IN_PADDING) {
                        for (size_t i = 0; i < d->in_len; i++)
                                if (d->in[i] != 0)
                                        return berr_set(err, -EBADMSG,
                                                        "%s: non-zero data after the end of the stream",
                                                        what);
                        d->in_len = 0;
                        continue;
                }
                ssize_t n = dec_step_out(d, &produced, err);
                if (n < 0)
                        return n;
        }
        return (ssize_t)produced;
}

static ssize_t dec_read(struct decompressor *d, const void **ret_buf, struct berr **err)
{
        if (d->fmt == DEC_UNKNOWN) {
                int r = dec_sniff(d, err);
                if (r < 0)
                        return r;
        }
        if (d->fmt == DEC_NONE) {
                /* Zero-copy passthrough of the source's chunks. */
                ssize_t n = dec_fill(d, err);
                if (n < 0)
                        return berr_prefix(err, (int)n, "reading layer");
                *ret_buf = d->in;
                d->in_len = 0;
                return n;
        }
        if (d->state == DEC_DONE)
                return 0;
        ssize_t n = dec_read_compressed(d, err);
        if (n > 0)
                *ret_buf = d->out;
        return n;
}

ssize_t decompressor_read(struct decompressor *d, const void **ret_buf, struct berr **err)
{
        if (d->failed)
                return berr_set(err, d->failed, "layer decompression failed earlier");
        ssize_t n = dec_read(d, ret_buf, err);
        if (n < 0)
                d->failed = (int)n;
        return n;
}

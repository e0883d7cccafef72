/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The transports' own wire bytes (transport/rdma/wire.c, transport/tcp/wire.c): byte-exact
 * layouts as docs/protocol.md sections 2, 3.2 and 14 give them, round trips, and one
 * negative test per validation rule with the exact error.
 */
#include <errno.h>
#include <stdint.h>
#include <string.h>

#include <glib.h>

#include "rdma/wire.h"
#include "tcp/wire.h"
#include "test-le.h"

/* ---------- rdma: hello in the connect private data (14.2) ---------- */

static void test_rdma_hello_trailer(void)
{
    uint8_t hello[48];
    for (unsigned i = 0; i < sizeof(hello); i++) {
        hello[i] = (uint8_t)(0x80 + i);
    }
    uint8_t pdata[RDMA_WIRE_PDATA_SIZE];
    memset(pdata, 0xee, sizeof(pdata));
    uint8_t mark = 0;
    xp_rdma_wire_pack_hello(hello, sizeof(hello), pdata, &mark);
    g_assert_cmpuint(RDMA_WIRE_PDATA_SIZE, ==, 56);
    g_assert_cmpuint(mark, ==, 1);
    g_assert_cmpmem(pdata, 48, hello, 48);
    for (unsigned i = 48; i < 55; i++) {
        g_assert_cmpuint(pdata[i], ==, 0); /* padding */
    }
    g_assert_cmpuint(pdata[55], ==, 48); /* hello_len */

    uint8_t out[RDMA_WIRE_PDATA_SIZE];
    size_t len = 0;
    g_autoptr(GError) err = NULL;
    g_assert_true(xp_rdma_wire_unpack_hello(pdata, sizeof(pdata), mark, out, &len, &err));
    g_assert_no_error(err);
    g_assert_cmpuint(len, ==, 48);
    g_assert_cmpmem(out, len, hello, sizeof(hello));
}

static void test_rdma_hello_full(void)
{
    uint8_t hello[RDMA_WIRE_PDATA_SIZE];
    for (unsigned i = 0; i < sizeof(hello); i++) {
        hello[i] = (uint8_t)(i * 7 + 1);
    }
    uint8_t pdata[RDMA_WIRE_PDATA_SIZE];
    uint8_t mark = 0;
    xp_rdma_wire_pack_hello(hello, sizeof(hello), pdata, &mark);
    g_assert_cmpuint(mark, ==, 2);
    g_assert_cmpmem(pdata, sizeof(pdata), hello, sizeof(hello));
    /* the CM may present more bytes than were sent: only the first 56 count */
    uint8_t longer[64];
    memcpy(longer, pdata, sizeof(pdata));
    memset(longer + sizeof(pdata), 0x55, sizeof(longer) - sizeof(pdata));
    uint8_t out[RDMA_WIRE_PDATA_SIZE];
    size_t len = 0;
    g_assert_true(xp_rdma_wire_unpack_hello(longer, sizeof(longer), mark, out, &len, NULL));
    g_assert_cmpuint(len, ==, sizeof(hello));
    g_assert_cmpmem(out, len, hello, sizeof(hello));
}

static void expect_bad_hello(const uint8_t *pdata, size_t plen, unsigned mark,
                             const char *message)
{
    uint8_t out[RDMA_WIRE_PDATA_SIZE];
    size_t len = 12345;
    g_autoptr(GError) err = NULL;
    g_assert_false(xp_rdma_wire_unpack_hello(pdata, plen, mark, out, &len, &err));
    g_assert_error(err, XP_ERROR, XP_ERROR_FAILED);
    g_assert_cmpstr(err->message, ==, message);
    g_assert_cmpuint(len, ==, 12345); /* untouched */
}

static void test_rdma_hello_bad_short(void)
{
    uint8_t pdata[RDMA_WIRE_PDATA_SIZE] = { 0 };
    pdata[RDMA_WIRE_PDATA_SIZE - 1] = 48;
    expect_bad_hello(pdata, 55, 1, "malformed hello (55 bytes of private data, mark 1)");
}

static void test_rdma_hello_bad_mark(void)
{
    uint8_t pdata[RDMA_WIRE_PDATA_SIZE] = { 0 };
    pdata[RDMA_WIRE_PDATA_SIZE - 1] = 48;
    expect_bad_hello(pdata, sizeof(pdata), 0,
                     "malformed hello (56 bytes of private data, mark 0)");
    expect_bad_hello(pdata, sizeof(pdata), 3,
                     "malformed hello (56 bytes of private data, mark 3)");
}

static void test_rdma_hello_bad_trailer_len(void)
{
    uint8_t pdata[RDMA_WIRE_PDATA_SIZE] = { 0 };
    pdata[RDMA_WIRE_PDATA_SIZE - 1] = 56; /* a trailer hello is shorter than the data */
    expect_bad_hello(pdata, sizeof(pdata), 1,
                     "malformed hello (56 bytes of private data, mark 1)");
    pdata[RDMA_WIRE_PDATA_SIZE - 1] = 255;
    expect_bad_hello(pdata, sizeof(pdata), 1,
                     "malformed hello (56 bytes of private data, mark 1)");
}

/* ---------- rdma: reject private data (14.3) ---------- */

static void test_rdma_reject_layout(void)
{
    uint8_t pdata[RDMA_WIRE_REJECT_MAX];
    size_t len = xp_rdma_wire_pack_reject(0x01020304u, "bad token", pdata);
    g_assert_cmpuint(len, ==, 4 + 9);
    g_assert_cmpuint(le_get(pdata, 4), ==, 0x01020304u);
    g_assert_cmpmem(pdata + 4, 9, "bad token", 9);

    uint32_t status = 0;
    char reason[XP_REASON_MAX + 1];
    /* the CM pads reject data with zeros: the text ends at the first NUL */
    uint8_t padded[148] = { 0 };
    memcpy(padded, pdata, len);
    xp_rdma_wire_unpack_reject(padded, sizeof(padded), &status, reason);
    g_assert_cmpuint(status, ==, 0x01020304u);
    g_assert_cmpstr(reason, ==, "bad token");

    g_assert_cmpuint(xp_rdma_wire_pack_reject(7, NULL, pdata), ==, 4);
    xp_rdma_wire_unpack_reject(pdata, 4, &status, reason);
    g_assert_cmpuint(status, ==, 7);
    g_assert_cmpstr(reason, ==, "");
}

static void test_rdma_reject_long_reason_cut(void)
{
    char longr[300];
    memset(longr, 'r', sizeof(longr) - 1);
    longr[sizeof(longr) - 1] = '\0';
    uint8_t pdata[RDMA_WIRE_REJECT_MAX];
    g_assert_cmpuint(xp_rdma_wire_pack_reject(1, longr, pdata), ==, 4 + XP_REASON_MAX);
    uint32_t status;
    char reason[XP_REASON_MAX + 1];
    xp_rdma_wire_unpack_reject(pdata, sizeof(pdata), &status, reason);
    g_assert_cmpuint(strlen(reason), ==, XP_REASON_MAX);
    g_assert_cmpuint(status, ==, 1);
}

static void test_rdma_reject_bad_short(void)
{
    /* fewer than 4 bytes (e.g. a reject by the CM itself): status 0, no reason */
    const uint8_t three[3] = { 9, 9, 9 };
    uint32_t status = 77;
    char reason[XP_REASON_MAX + 1] = "stale";
    xp_rdma_wire_unpack_reject(three, sizeof(three), &status, reason);
    g_assert_cmpuint(status, ==, 0);
    g_assert_cmpstr(reason, ==, "");
}

/* ---------- rdma: immediate data (14.4) ---------- */

static void test_rdma_imm(void)
{
    g_assert_cmphex(xp_rdma_wire_pack_imm(5, false), ==, 5);
    g_assert_cmphex(xp_rdma_wire_pack_imm(16, true), ==, 0x80000010u);
    g_assert_cmphex(xp_rdma_wire_pack_imm(0xffff, false), ==, 0xffffu);
    unsigned credits = 0;
    bool only = true;
    g_assert_true(xp_rdma_wire_unpack_imm(0x80000020u, &credits, &only));
    g_assert_cmpuint(credits, ==, 32);
    g_assert_true(only);
    g_assert_true(xp_rdma_wire_unpack_imm(3, &credits, &only));
    g_assert_cmpuint(credits, ==, 3);
    g_assert_false(only);
}

static void test_rdma_imm_bad_reserved(void)
{
    for (unsigned bit = 16; bit <= 30; bit++) {
        unsigned credits = 99;
        bool only = false;
        g_assert_false(xp_rdma_wire_unpack_imm(1u << bit | 1u, &credits, &only));
        g_assert_cmpuint(credits, ==, 99);
    }
}

/* ---------- rdma: region descriptor (14.5) ---------- */

static void test_rdma_desc_layout(void)
{
    uint8_t desc[RDMA_WIRE_DESC_SIZE];
    memset(desc, 0xee, sizeof(desc));
    xp_rdma_wire_pack_desc(0x1122334455667788ull, 0xa1b2c3d4u, desc);
    g_assert_cmphex(le_get(desc, 8), ==, 0x1122334455667788ull);
    g_assert_cmphex(le_get(desc + 8, 4), ==, 0xa1b2c3d4u);
    g_assert_cmphex(le_get(desc + 12, 4), ==, 0);
    uint64_t addr = 0;
    uint32_t rkey = 0;
    g_autoptr(GError) err = NULL;
    g_assert_true(xp_rdma_wire_unpack_desc(desc, 4096, &addr, &rkey, &err));
    g_assert_no_error(err);
    g_assert_cmphex(addr, ==, 0x1122334455667788ull);
    g_assert_cmphex(rkey, ==, 0xa1b2c3d4u);
}

static void test_rdma_desc_bad_reserved(void)
{
    uint8_t desc[RDMA_WIRE_DESC_SIZE];
    xp_rdma_wire_pack_desc(0x1000, 7, desc);
    le_set(desc + 12, 4, 0xdeadbeefu);
    uint64_t addr = 1;
    uint32_t rkey = 1;
    g_autoptr(GError) err = NULL;
    g_assert_false(xp_rdma_wire_unpack_desc(desc, 4096, &addr, &rkey, &err));
    g_assert_error(err, XP_ERROR, XP_ERROR_FAILED);
    g_assert_cmpstr(err->message, ==,
                    "bad rdma region descriptor: reserved field is 0xdeadbeef, must be 0");
    g_assert_cmpuint(addr, ==, 1);
    g_assert_cmpuint(rkey, ==, 1);
}

static void test_rdma_desc_bad_wrap(void)
{
    uint8_t desc[RDMA_WIRE_DESC_SIZE];
    xp_rdma_wire_pack_desc(UINT64_MAX - 4095, 7, desc);
    uint64_t addr;
    uint32_t rkey;
    g_assert_true(xp_rdma_wire_unpack_desc(desc, 4095, &addr, &rkey, NULL)); /* ends at 2^64-1 */
    g_autoptr(GError) err = NULL;
    g_assert_false(xp_rdma_wire_unpack_desc(desc, 4097, &addr, &rkey, &err));
    g_assert_error(err, XP_ERROR, XP_ERROR_FAILED);
    g_assert_cmpstr(err->message, ==,
                    "bad rdma region descriptor: addr 0xfffffffffffff000 + length 4097 wraps");
}

/* ---------- tcp: frame header (2) and answer (3.2) ---------- */

static void test_tcp_hdr(void)
{
    uint8_t hdr[TCP_WIRE_HDR_SIZE];
    tcp_wire_pack_hdr(0x00001234u, hdr);
    g_assert_cmphex(le_get(hdr, 4), ==, 0x1234u);
    uint32_t len = 0;
    g_assert_cmpint(tcp_wire_unpack_hdr(hdr, XP_MSG_MAX, &len), ==, 0);
    g_assert_cmpuint(len, ==, 0x1234u);
    le_set(hdr, 4, XP_MSG_MAX);
    g_assert_cmpint(tcp_wire_unpack_hdr(hdr, XP_MSG_MAX, &len), ==, 0);
    g_assert_cmpuint(len, ==, XP_MSG_MAX);
    le_set(hdr, 4, 0);
    g_assert_cmpint(tcp_wire_unpack_hdr(hdr, 0, &len), ==, 0);
    g_assert_cmpuint(len, ==, 0);
}

static void test_tcp_hdr_bad_size(void)
{
    uint8_t hdr[TCP_WIRE_HDR_SIZE];
    uint32_t len = 7;
    le_set(hdr, 4, XP_MSG_MAX + 1);
    g_assert_cmpint(tcp_wire_unpack_hdr(hdr, UINT32_MAX, &len), ==, -EMSGSIZE);
    le_set(hdr, 4, 100);
    g_assert_cmpint(tcp_wire_unpack_hdr(hdr, 99, &len), ==, -EMSGSIZE); /* over the cap */
    le_set(hdr, 4, 0xffffffffu);
    g_assert_cmpint(tcp_wire_unpack_hdr(hdr, UINT32_MAX, &len), ==, -EMSGSIZE);
    g_assert_cmpuint(len, ==, 7);
}

static void test_tcp_answer(void)
{
    uint8_t ans[TCP_WIRE_ANSWER_SIZE];
    g_assert_cmpuint(TCP_WIRE_ANSWER_SIZE, ==, 124);
    memset(ans, 0xee, sizeof(ans));
    tcp_wire_pack_answer(2, "unknown session id", ans);
    g_assert_cmpuint(le_get(ans, 4), ==, 2);
    g_assert_cmpmem(ans + 4, 18, "unknown session id", 18);
    for (unsigned i = 4 + 18; i < sizeof(ans); i++) {
        g_assert_cmpuint(ans[i], ==, 0); /* NUL-padded */
    }
    uint32_t status = 0;
    char reason[XP_REASON_MAX + 1];
    g_assert_true(tcp_wire_unpack_answer(ans, sizeof(ans), &status, reason, NULL));
    g_assert_cmpuint(status, ==, 2);
    g_assert_cmpstr(reason, ==, "unknown session id");

    /* a 120-byte reason has no NUL on the wire */
    char longr[200];
    memset(longr, 'x', sizeof(longr) - 1);
    longr[sizeof(longr) - 1] = '\0';
    tcp_wire_pack_answer(0, longr, ans);
    g_assert_cmpuint(ans[sizeof(ans) - 1], ==, 'x');
    g_assert_true(tcp_wire_unpack_answer(ans, sizeof(ans), &status, reason, NULL));
    g_assert_cmpuint(status, ==, 0);
    g_assert_cmpuint(strlen(reason), ==, XP_REASON_MAX);
}

static void test_tcp_answer_bad_len(void)
{
    uint8_t ans[TCP_WIRE_ANSWER_SIZE + 1] = { 0 };
    uint32_t status = 5;
    char reason[XP_REASON_MAX + 1];
    g_autoptr(GError) err = NULL;
    g_assert_false(tcp_wire_unpack_answer(ans, TCP_WIRE_ANSWER_SIZE - 1, &status, reason, &err));
    g_assert_error(err, XP_ERROR, XP_ERROR_FAILED);
    g_assert_cmpstr(err->message, ==, "answer of 123 bytes, expected 124");
    g_clear_error(&err);
    g_assert_false(tcp_wire_unpack_answer(ans, sizeof(ans), &status, reason, &err));
    g_assert_cmpstr(err->message, ==, "answer of 125 bytes, expected 124");
    g_assert_cmpuint(status, ==, 5);
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/xp-wire/rdma/hello_trailer", test_rdma_hello_trailer);
    g_test_add_func("/xp-wire/rdma/hello_full", test_rdma_hello_full);
    g_test_add_func("/xp-wire/rdma/hello_bad_short", test_rdma_hello_bad_short);
    g_test_add_func("/xp-wire/rdma/hello_bad_mark", test_rdma_hello_bad_mark);
    g_test_add_func("/xp-wire/rdma/hello_bad_trailer_len", test_rdma_hello_bad_trailer_len);
    g_test_add_func("/xp-wire/rdma/reject_layout", test_rdma_reject_layout);
    g_test_add_func("/xp-wire/rdma/reject_long_reason_cut", test_rdma_reject_long_reason_cut);
    g_test_add_func("/xp-wire/rdma/reject_bad_short", test_rdma_reject_bad_short);
    g_test_add_func("/xp-wire/rdma/imm", test_rdma_imm);
    g_test_add_func("/xp-wire/rdma/imm_bad_reserved", test_rdma_imm_bad_reserved);
    g_test_add_func("/xp-wire/rdma/desc_layout", test_rdma_desc_layout);
    g_test_add_func("/xp-wire/rdma/desc_bad_reserved", test_rdma_desc_bad_reserved);
    g_test_add_func("/xp-wire/rdma/desc_bad_wrap", test_rdma_desc_bad_wrap);
    g_test_add_func("/xp-wire/tcp/hdr", test_tcp_hdr);
    g_test_add_func("/xp-wire/tcp/hdr_bad_size", test_tcp_hdr_bad_size);
    g_test_add_func("/xp-wire/tcp/answer", test_tcp_answer);
    g_test_add_func("/xp-wire/tcp/answer_bad_len", test_tcp_answer_bad_len);
    return g_test_run();
}

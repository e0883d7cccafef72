/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Raw RDMA baseline on verbs/ (an ib_write_bw-like loop): N RC QPs, each WRITEs its slice of
 * guest memory into a freshly mapped, registered destination buffer in chunks of the
 * migration's packet size, signaling every 16th WR, then SENDs "done". No headers, no
 * barrier, no credits: the ceiling mfrdma's rdma transport is measured against.
 */
#include "bench.h"

#include <vb.h>

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stddef.h>
#include <string.h>

#define RAW_SIGNAL_EVERY 16u
#define RAW_CTL_LEN 64u

typedef struct {
    VbCmId *id;
    VbDevice *dev;
    VbPd *pd;
    VbCq *cq;
    VbQp *qp;
    VbMr *mr;      /* the slice: source local, destination remote-write */
    VbMr *ctl_mr;  /* ctl[] */
    uint8_t ctl[RAW_CTL_LEN];
    uint8_t *base;
    uint64_t len, chunk;
    uint64_t remote_addr;
    uint32_t rkey;
    VbCqe write_cqe, recv_cqe, send_cqe;
    unsigned signaled_done; /* signaled WRITE completions seen */
    bool recv_done, send_done;
    int wc_status;          /* first failed completion's status, 0 if none */
    const char *wc_str;
    pthread_barrier_t *start;
    double cpu_s;
    int err;                /* -errno of a failed post/poll */
} RawQp;

#define RAW_QP_OF(p, field) ((RawQp *)((char *)(p) - offsetof(RawQp, field)))

static void raw_note_status(RawQp *q, const VbWc *wc)
{
    if (wc->status != VB_WC_STATUS_SUCCESS && q->wc_status == 0) {
        q->wc_status = wc->status;
        q->wc_str = wc->status_str;
    }
}

static void raw_write_done(VbCqe *cqe, const VbWc *wc)
{
    RawQp *q = RAW_QP_OF(cqe, write_cqe);
    raw_note_status(q, wc);
    q->signaled_done++;
}

static void raw_recv_done(VbCqe *cqe, const VbWc *wc)
{
    RawQp *q = RAW_QP_OF(cqe, recv_cqe);
    raw_note_status(q, wc);
    q->recv_done = true;
}

static void raw_send_done(VbCqe *cqe, const VbWc *wc)
{
    RawQp *q = RAW_QP_OF(cqe, send_cqe);
    raw_note_status(q, wc);
    q->send_done = true;
}

static void raw_qp_init(RawQp *q)
{
    memset(q, 0, sizeof(*q));
    q->write_cqe.done = raw_write_done;
    q->recv_cqe.done = raw_recv_done;
    q->send_cqe.done = raw_send_done;
}

static void raw_qp_clear(RawQp *q)
{
    if (q->id) {
        vb_cm_disconnect(q->id);
    }
    vb_cm_id_free(q->id); /* destroys the QP too */
    vb_mr_free(q->mr);
    vb_mr_free(q->ctl_mr);
    vb_cq_free(q->cq);
    vb_pd_free(q->pd);
    vb_device_free(q->dev);
    memset(q, 0, sizeof(*q));
}

/* PD, CQ, QP and control buffer on a resolved or requested cm_id. */
static bool raw_qp_resources(RawQp *q, GError **error)
{
    VbQpCaps want = { .max_send_wr = 256, .max_recv_wr = 4, .max_send_sge = 1,
                      .max_recv_sge = 1, .max_inline = 0 };
    q->dev = vb_device_from_cm_id(q->id, error);
    if (!q->dev || !(q->pd = vb_pd_new(q->dev, error)) ||
        !(q->cq = vb_cq_new(q->dev, 512, error)) ||
        !(q->qp = vb_qp_new(q->id, q->pd, q->cq, &want, error)) ||
        !(q->ctl_mr = vb_mr_reg(q->pd, q->ctl, sizeof(q->ctl), VB_ACCESS_LOCAL_WRITE, error))) {
        return false;
    }
    VbSge sge = { (uintptr_t)q->ctl, sizeof(q->ctl), vb_mr_lkey(q->ctl_mr) };
    int r = vb_qp_post_recv(q->qp, &sge, 1, &q->recv_cqe);
    if (r < 0) {
        vb_set_error_errno(error, -r, "raw rdma baseline: post receive");
        return false;
    }
    return true;
}

/* Waits until *flag (set by a completion handler) or a failed completion. */
static bool raw_wait(RawQp *q, const bool *flag, int timeout_ms, GError **error)
{
    double deadline = bench_now_s() + timeout_ms / 1000.0;
    while (!*flag && q->wc_status == 0) {
        int r = vb_cq_wait(q->cq, 16, 100, -1);
        if (r < 0) {
            vb_set_error_errno(error, -r, "raw rdma baseline: poll CQ");
            return false;
        }
        if (timeout_ms >= 0 && bench_now_s() > deadline) {
            g_set_error(error, VB_ERROR, VB_ERROR_TIMEOUT,
                        "raw rdma baseline: no completion within %d ms", timeout_ms);
            return false;
        }
    }
    if (q->wc_status) {
        g_set_error(error, VB_ERROR, VB_ERROR_FAILED, "raw rdma baseline: completion error: %s",
                    q->wc_str);
        return false;
    }
    return true;
}

static void raw_slice(const BenchRawSpec *spec, unsigned i, uint64_t *off, uint64_t *len)
{
    uint64_t per = spec->bytes / spec->streams / 4096 * 4096;
    *off = per * i;
    *len = i + 1 == spec->streams ? spec->bytes - per * i : per;
}

static bool raw_check(const BenchRawSpec *spec, GError **error)
{
    if (spec->streams == 0 || spec->streams > 64 || spec->chunk == 0 ||
        spec->chunk > (1u << 30) || spec->bytes < (uint64_t)spec->streams * 4096) {
        g_set_error(error, VB_ERROR, VB_ERROR_FAILED, "raw rdma baseline: bad spec (streams %u, "
                    "bytes %" G_GUINT64_FORMAT ", chunk %" G_GUINT64_FORMAT ")",
                    spec->streams, spec->bytes, spec->chunk);
        return false;
    }
    return true;
}

/* ---------- destination (agent) ---------- */

bool bench_raw_rdma_serve(const BenchAgentConfig *cfg, int ctl_fd, const BenchRawSpec *spec,
                          void **buf, uint64_t *buf_len, GError **error)
{
    if (!raw_check(spec, error)) {
        return false;
    }
    if (!cfg->rdma_host) {
        g_set_error(error, VB_ERROR, VB_ERROR_NO_DEVICE, "agent: no RDMA address configured");
        return false;
    }
    if (spec->fresh || *buf_len != spec->bytes) {
        bench_unmap(*buf, *buf_len);
        *buf = NULL;
        *buf_len = 0;
        if (!(*buf = bench_map_fresh(spec->bytes, cfg->thp, error))) {
            return false;
        }
        *buf_len = spec->bytes;
    }
    if (!vb_memlock_check(spec->bytes, error)) {
        return false;
    }
    g_autoptr(VbCmId) lid = vb_cm_id_new(error);
    if (!lid || !vb_cm_listen(lid, cfg->rdma_host, "0", 64, error) ||
        !bench_ctl_send(ctl_fd, error, "OK %s %u", cfg->rdma_host, vb_cm_local_port(lid))) {
        return false;
    }
    RawQp *qs = g_new0(RawQp, spec->streams);
    bool ok = true;
    double reg_ms = 0, reg_cpu = 0;
    unsigned n = 0;
    for (; n < spec->streams && ok; n++) {
        RawQp *q = &qs[n];
        raw_qp_init(q);
        VbCmEvent ev;
        if (!vb_cm_expect(lid, VB_CM_CONNECT_REQUEST, (int)cfg->timeout_ms, -1, &ev,
                          "raw rdma baseline: connection request on", error)) {
            ok = false;
            break;
        }
        q->id = ev.new_id;
        uint64_t off, len;
        raw_slice(spec, n, &off, &len);
        q->base = (uint8_t *)*buf + off;
        q->len = len;
        if (!raw_qp_resources(q, error)) {
            ok = false;
            break;
        }
        /* pinning fresh memory faults it in: that CPU is the receiver's too (the engine's
         * destination counts its registration in cpu_s), so it is reported apart */
        double t0 = bench_now_s(), c0 = bench_thread_cpu_s();
        q->mr = vb_mr_reg(q->pd, q->base, len, VB_ACCESS_LOCAL_WRITE | VB_ACCESS_REMOTE_WRITE,
                          error);
        reg_ms += (bench_now_s() - t0) * 1000;
        reg_cpu += bench_thread_cpu_s() - c0;
        if (!q->mr || !vb_cm_accept(q->id, NULL, 0, (int)cfg->timeout_ms, -1, error)) {
            ok = false;
            break;
        }
        /* the source's receive was posted before it connected */
        uint64_t addr = (uintptr_t)q->base;
        uint32_t rkey = vb_mr_rkey(q->mr);
        uint8_t msg[RAW_CTL_LEN] = { 0 };
        memcpy(msg, &addr, 8);
        memcpy(msg + 8, &rkey, 4);
        memcpy(q->ctl, msg, sizeof(msg));
        VbSge sge = { (uintptr_t)q->ctl, 12, vb_mr_lkey(q->ctl_mr) };
        /* the recv posted in raw_qp_resources() is for the source's "done"; the ctl buffer is
         * reused for the send: its completion comes before the done can arrive */
        int r = vb_qp_post_send(q->qp, &sge, 1, false, 0, &q->send_cqe);
        if (r < 0 || !raw_wait(q, &q->send_done, (int)cfg->timeout_ms, error)) {
            if (r < 0) {
                vb_set_error_errno(error, -r, "raw rdma baseline: post send");
            }
            ok = false;
            break;
        }
    }
    double cpu0 = bench_thread_cpu_s();
    for (unsigned i = 0; i < n && ok; i++) {
        ok = raw_wait(&qs[i], &qs[i].recv_done, -1, error);
    }
    double cpu = bench_thread_cpu_s() - cpu0;
    for (unsigned i = 0; i < spec->streams; i++) {
        raw_qp_clear(&qs[i]);
    }
    g_free(qs);
    return ok && bench_ctl_send(ctl_fd, error, "DONE %.6f %.3f %.6f", cpu, reg_ms, reg_cpu);
}

/* ---------- source ---------- */

static gpointer raw_rdma_send_thread(gpointer opaque)
{
    RawQp *q = opaque;
    uint32_t max_wr = vb_qp_caps(q->qp)->max_send_wr;
    uint64_t nwr = (q->len + q->chunk - 1) / q->chunk;
    uint64_t posted = 0;
    pthread_barrier_wait(q->start);
    double cpu0 = bench_thread_cpu_s();
    while (posted < nwr && q->wc_status == 0) {
        /* a signaled WRITE completes the RAW_SIGNAL_EVERY before it (RC completes in order) */
        uint64_t acked = (uint64_t)q->signaled_done * RAW_SIGNAL_EVERY;
        if (posted - MIN(acked, posted) + 1 > max_wr) {
            int r = vb_cq_wait(q->cq, 16, -1, -1);
            if (r < 0) {
                q->err = r;
                break;
            }
            continue;
        }
        uint64_t off = posted * q->chunk;
        VbSge sge = { (uintptr_t)(q->base + off), (uint32_t)MIN(q->chunk, q->len - off),
                      vb_mr_lkey(q->mr) };
        /* the last WRITE is covered by the signaled SEND that follows it */
        bool sig = (posted + 1) % RAW_SIGNAL_EVERY == 0;
        int r = vb_qp_post_write(q->qp, &sge, 1, q->remote_addr + off, q->rkey,
                                 sig ? &q->write_cqe : NULL);
        if (r < 0) {
            q->err = r;
            break;
        }
        posted++;
    }
    if (q->err == 0 && q->wc_status == 0) {
        /* "done": delivered only after every earlier WRITE is placed (RC ordering) */
        VbSge sge = { (uintptr_t)q->ctl, 4, vb_mr_lkey(q->ctl_mr) };
        int r = vb_qp_post_send(q->qp, &sge, 1, false, 0, &q->send_cqe);
        if (r < 0) {
            q->err = r;
        } else {
            while (!q->send_done && q->wc_status == 0) {
                r = vb_cq_wait(q->cq, 16, -1, -1);
                if (r < 0) {
                    q->err = r;
                    break;
                }
            }
        }
    }
    q->cpu_s = bench_thread_cpu_s() - cpu0;
    return NULL;
}

bool bench_raw_rdma_run(int ctl_fd, const BenchRawSpec *spec, uint8_t *src,
                        BenchRawResult *out, GError **error)
{
    char line[BENCH_LINE_MAX], host[256];
    unsigned port = 0;
    if (!raw_check(spec, error) ||
        !bench_ctl_send(ctl_fd, error, "RDMARAW %u %" G_GUINT64_FORMAT " %" G_GUINT64_FORMAT
                        " 0 %d", spec->streams, spec->bytes, spec->chunk, spec->fresh) ||
        !bench_ctl_recv(ctl_fd, line, sizeof(line), 60000, error)) {
        return false;
    }
    if (sscanf(line, "OK %255s %u", host, &port) != 2) {
        g_set_error(error, VB_ERROR, VB_ERROR_FAILED, "raw rdma baseline: agent: %s", line);
        return false;
    }
    g_autofree char *port_s = g_strdup_printf("%u", port);
    RawQp *qs = g_new0(RawQp, spec->streams);
    pthread_barrier_t start;
    pthread_barrier_init(&start, NULL, spec->streams + 1);
    bool ok = true;
    double src_reg_ms = 0, src_reg_cpu = 0;
    for (unsigned i = 0; i < spec->streams && ok; i++) {
        RawQp *q = &qs[i];
        raw_qp_init(q);
        uint64_t off, len;
        raw_slice(spec, i, &off, &len);
        q->base = src + off;
        q->len = len;
        q->chunk = spec->chunk;
        q->start = &start;
        ok = (q->id = vb_cm_id_new(error)) && vb_cm_resolve(q->id, host, port_s, 5000, -1, error) &&
             raw_qp_resources(q, error);
        if (ok) {
            double t0 = bench_now_s(), c0 = bench_thread_cpu_s();
            q->mr = vb_mr_reg(q->pd, q->base, len, VB_ACCESS_LOCAL_WRITE, error);
            src_reg_ms += (bench_now_s() - t0) * 1000;
            src_reg_cpu += bench_thread_cpu_s() - c0;
            ok = q->mr && vb_cm_connect(q->id, NULL, 0, 0, 10000, -1, NULL, error) &&
                 raw_wait(q, &q->recv_done, 10000, error);
        }
        if (ok) {
            memcpy(&q->remote_addr, q->ctl, 8);
            memcpy(&q->rkey, q->ctl + 8, 4);
        }
    }
    GThread **th = g_new0(GThread *, spec->streams);
    double t0 = 0, t1 = 0, cpu = 0;
    int err = 0;
    if (ok) {
        for (unsigned i = 0; i < spec->streams; i++) {
            th[i] = g_thread_new("bench-rdma-send", raw_rdma_send_thread, &qs[i]);
        }
        pthread_barrier_wait(&start);
        t0 = bench_now_s();
        for (unsigned i = 0; i < spec->streams; i++) {
            g_thread_join(th[i]);
            cpu += qs[i].cpu_s;
            if (!err && (qs[i].err || qs[i].wc_status)) {
                err = qs[i].err ? qs[i].err : -EIO;
                if (qs[i].wc_status) {
                    g_set_error(error, VB_ERROR, VB_ERROR_FAILED,
                                "raw rdma baseline: QP %u: completion error: %s", i,
                                qs[i].wc_str);
                } else {
                    vb_set_error_errno(error, -err, "raw rdma baseline: QP %u: post", i);
                }
            }
        }
        ok = !err;
    }
    bool got = bench_ctl_recv(ctl_fd, line, sizeof(line), ok ? -1 : 30000, ok ? error : NULL);
    t1 = bench_now_s();
    for (unsigned i = 0; i < spec->streams; i++) {
        raw_qp_clear(&qs[i]);
    }
    g_free(qs);
    g_free(th);
    pthread_barrier_destroy(&start);
    if (!ok || !got) {
        return false;
    }
    double dcpu = 0, reg = 0, reg_cpu = NAN; /* an older agent sends no registration CPU */
    if (sscanf(line, "DONE %lf %lf %lf", &dcpu, &reg, &reg_cpu) < 2) {
        g_set_error(error, VB_ERROR, VB_ERROR_FAILED, "raw rdma baseline: %s", line);
        return false;
    }
    *out = (BenchRawResult){ .elapsed_s = t1 - t0, .src_cpu_s = cpu, .dst_cpu_s = dcpu,
                             .reg_ms = reg, .src_reg_ms = src_reg_ms, .dst_reg_cpu_s = reg_cpu,
                             .src_reg_cpu_s = src_reg_cpu, .bytes = spec->bytes };
    return true;
}

/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * A source driven by hand over raw loopback sockets, for tests that must send what the real
 * source never would: the fuzzed destination session (tests/fuzz) and the hostile peer of
 * the tool (tests/faults). Messages are built with the engine's own pack functions.
 */
#pragma once

#include <glib.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "wire.h"

/* Connected TCP socket to 127.0.0.1:port (3 s send/receive timeouts, closed with a reset);
 * -1 with errno set. */
int peer_connect(uint16_t port);
/* Best effort: false once the destination has closed, which is its right. */
bool peer_write(int fd, const void *p, size_t len);
/* One transport frame: the little-endian length word and p, in one send. */
bool peer_frame(int fd, const void *p, size_t len);
/* Reads one frame; returns its first u32 (an answer's status), or -1 on close or timeout. */
int64_t peer_read_frame(int fd);
/* Sends a hello and reads the answer: true when accepted (status 0). */
bool peer_hello(int fd, const MfrHello *h);
/* Header + body of a control message into buf; returns its length. */
size_t peer_ctrl_msg(uint32_t seq, uint16_t type, const void *body, size_t len, uint8_t *buf);

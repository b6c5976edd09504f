#!/usr/bin/env python3
"""make_seeds.py: write the seed corpora under tests/fuzz/corpus/<target>/.

Run from anywhere: python3 tests/fuzz/make_seeds.py. The files are checked
in; rerun this after changing an input format of a fuzz target, and commit
the result. Every seed is built here from a readable description, so that
a reviewer can tell what each one exercises. Output is deterministic.

Formats (see each target's header comment):
  dnsmsg    a DNS message (read as a query and as an answer to example.com A)
  upstream  knobs, upstream counts, seed, then operations (fuzz_upstream.c)
  conf      a config file
  cache     bound, stale window, then operations (fuzz_cache.c)
"""
import os
import shutil
import struct
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
TOP = os.path.dirname(os.path.dirname(HERE))
CORPUS = os.path.join(HERE, "corpus")


def name(text):
    out = b""
    for label in text.split("."):
        if label:
            out += bytes([len(label)]) + label.encode()
    return out + b"\0"


def header(qid, flags, qd=1, an=0, ns=0, ar=0):
    return struct.pack(">HHHHHH", qid, flags, qd, an, ns, ar)


def question(qname, qtype=1):
    return name(qname) + struct.pack(">HH", qtype, 1)


def rr_a(ttl, last=1, owner=b"\xc0\x0c"):
    return owner + struct.pack(">HHIH", 1, 1, ttl, 4) + bytes([192, 0, 2, last])


def opt(options=b"", do=False, payload=1232):
    return b"\0" + struct.pack(">HHIH", 41, payload, 0x8000 if do else 0,
                               len(options)) + options


def soa(ttl, minimum, owner="example.com"):
    rdata = name("ns.example.com") + name("hostmaster.example.com") + \
        struct.pack(">IIIII", 1, 7200, 900, 1209600, minimum)
    return name(owner) + struct.pack(">HHIH", 6, 1, ttl, len(rdata)) + rdata


# ---- dnsmsg ----

def dnsmsg_seeds():
    q = question("example.com")
    s = {}
    s["query-plain"] = header(0x1234, 0x0100) + q
    s["query-edns-do"] = header(0x1234, 0x0110, ar=1) + q + opt(do=True)
    s["query-ecs-cookie"] = header(7, 0x0100, ar=1) + q + opt(
        struct.pack(">HHHBB", 8, 7, 1, 24, 0) + b"\xc0\x00\x02" +
        struct.pack(">HH", 10, 8) + b"\1\2\3\4\5\6\7\10")
    s["query-no-question"] = header(9, 0x0100, qd=0)
    s["query-opcode-status"] = header(9, 0x1100) + q
    s["query-long-name"] = header(1, 0x0100) + question(
        ".".join(["a" * 63] * 3 + ["b" * 61]))
    s["answer-a"] = header(1, 0x8180, an=1) + q + rr_a(300)
    s["answer-a-opt"] = header(1, 0x8180, an=2, ar=1) + q + rr_a(300) + \
        rr_a(60, 2) + opt(struct.pack(">HHH", 11, 2, 100))
    s["answer-nxdomain"] = header(1, 0x8183, ns=1) + q + soa(3600, 300)
    s["answer-nodata"] = header(1, 0x8180, ns=1) + q + soa(60, 600)
    s["answer-servfail"] = header(1, 0x8182) + q
    s["answer-truncated"] = header(1, 0x8380, an=1) + q + rr_a(5)
    s["answer-cname"] = header(1, 0x8180, an=2) + q + b"\xc0\x0c" + \
        struct.pack(">HHIH", 5, 1, 100, 6) + b"\3www\xc0\x0c" + \
        rr_a(100, 3, b"\xc0\x29")
    s["answer-loop"] = header(1, 0x8180, an=1) + q + b"\xc0\x1d" + \
        struct.pack(">HHIH", 1, 1, 1, 4) + b"\1\2\3\4"
    s["answer-count-lies"] = header(1, 0x8180, an=9) + q + rr_a(30)
    # Inputs the fuzzer found, kept as they were: BADVERS as an answer's
    # rcode (b9b2331), an OPT mid-message that broke pointers once cut
    # (0005bc2).
    s["regress-badvers"] = bytes.fromhex(
        "123401100001000000000001076578616d706f6d000001000100002904d00005"
        "80000000")
    s["regress-opt-mid-message"] = bytes.fromhex(
        "1234df100001000000000004076578616d706c6503636f6d0000010001000029"
        "002000000000000000d5000000007a00000000c02f20010000937a00000000c0"
        "3401000077c00cc02600076501000000000002076578616d706c6503636f6d00"
        "000100010000290020000001000003")
    return s


# ---- upstream ----
# Operations of fuzz_upstream.c (op byte % 13).
QUERY, CANCEL, TURN, ANSWER, RAW, CLOSE, OUTCOME, WAIT, RECONF, MEMFAIL = \
    0, 2, 3, 5, 7, 8, 9, 10, 11, 12
WHOLE = b"\x80"   # a chunk byte: the rest at once


def up_answer(conn=0, mode=0, sel=0, flags=0, counts=1, lie=0, body=b"",
              chunks=WHOLE):
    assert len(body) < 256 or mode & 0x08
    blen = len(body) >> 4 if mode & 0x08 else len(body)
    return bytes([ANSWER, conn, mode, sel]) + struct.pack(
        ">HHH", flags, counts, lie) + bytes([blen]) + body + chunks


def up(knobs=0x08, n_up=0, seed=1, ops=b""):
    return bytes([knobs, n_up, seed]) + ops


def upstream_seeds():
    a = rr_a(300)
    t = bytes([TURN])
    s = {}
    s["one-answer"] = up(ops=bytes([QUERY, 0]) + t + up_answer(body=a))
    s["three-pipelined"] = up(ops=bytes([QUERY, 0, QUERY, 1, QUERY, 2]) + t +
                              up_answer(sel=1, body=a) +
                              up_answer(sel=0, body=a) +
                              up_answer(sel=2, counts=0))
    s["byte-chunks"] = up(ops=bytes([QUERY, 0]) + t +
                          up_answer(body=a, chunks=b"\0" * 40))
    s["coalesced-frames"] = up(ops=bytes([QUERY, 0, QUERY, 0]) + t +
                               up_answer(body=a, chunks=b"\x05\x80") +
                               up_answer(sel=1, body=a, chunks=b"\x80"))
    s["wrong-id"] = up(ops=bytes([QUERY, 0]) + t +
                       up_answer(mode=0x02, lie=0x4242, body=a) +
                       up_answer(body=a))
    s["lying-length"] = up(ops=bytes([QUERY, 0, QUERY, 1]) + t +
                           up_answer(mode=0x04, lie=60000, body=a) +
                           up_answer(sel=1, body=a))
    s["short-frame"] = up(ops=bytes([QUERY, 0]) + t +
                          bytes([RAW, 0, 5]) + b"\0\3abc" + WHOLE)
    s["servfail"] = up(ops=bytes([QUERY, 0]) + t + up_answer(flags=2,
                                                             counts=0))
    s["raw-flags-mismatch"] = up(ops=bytes([QUERY, 1]) + t +
                                 up_answer(mode=0x01, flags=0x0100, body=a))
    s["keepalive"] = up(ops=bytes([QUERY, 0]) + t + up_answer(
        counts=1 | (1 << 5),
        body=a + opt(struct.pack(">HHH", 11, 2, 1))) + bytes([WAIT]))
    s["peer-close-resend"] = up(n_up=1, ops=bytes([QUERY, 0, QUERY, 1]) + t +
                                bytes([CLOSE, 0]) + t + t +
                                up_answer(body=a) + up_answer(sel=1, body=a))
    s["connect-fails"] = up(n_up=2, ops=bytes([OUTCOME, 2, QUERY, 0]) + t +
                            bytes([OUTCOME, 0]) + t + t + up_answer(body=a))
    s["verify-fails"] = up(ops=bytes([OUTCOME, 5, QUERY, 0]) + t + t +
                           bytes([QUERY, 1]))
    s["refused"] = up(n_up=1, ops=bytes([OUTCOME, 1, QUERY, 0, TURN]))
    s["write-fails"] = up(ops=bytes([QUERY, 0]) + t +
                          bytes([OUTCOME, 0x80, QUERY, 1]) + t + t +
                          up_answer(body=a))
    s["cancel-late-answer"] = up(ops=bytes([QUERY, 0]) + t +
                                 bytes([CANCEL, 0]) + up_answer(body=a))
    s["reenter"] = up(ops=bytes([QUERY, 0x80, QUERY, 1]) + t +
                      up_answer(sel=1, body=a) + t + up_answer(body=a))
    s["timeouts"] = up(knobs=0x00, n_up=1, ops=bytes([QUERY, 0, QUERY, 1]) +
                       t + bytes([WAIT, WAIT]) + up_answer(body=a))
    s["lifetime"] = up(knobs=0x48, ops=bytes([QUERY, 0]) + t +
                       up_answer(body=a) + bytes([WAIT, QUERY, 1]) + t +
                       up_answer(body=a))
    s["reconfigure"] = up(n_up=1, ops=bytes([QUERY, 0]) + t +
                          bytes([RECONF, 0, QUERY, 1]) + t +
                          up_answer(body=a) + bytes([RECONF, 1]) + t)
    s["memfail"] = up(ops=bytes([MEMFAIL, 0, QUERY, 0, MEMFAIL, 1, QUERY, 1,
                                 QUERY, 2]) + t + up_answer(body=a))
    s["many-records"] = up(ops=bytes([QUERY, 0]) + t + up_answer(
        mode=0x08, counts=0x0807, body=(a * 17)[:256]))
    return s


# ---- cache ----
# Operations of fuzz_cache.c (op byte % 11).
PUT, GET, STALE, ADV, FLUSHNAME, FLUSH, DUMP, RESIZE, CMEMFAIL = \
    0, 3, 4, 5, 6, 7, 8, 9, 10


def hi(op):
    """The op byte for operation op with the 0x80 bit set (op | 0x80 is
    another operation modulo 11)."""
    return 128 + (op - 128) % 11


ADV_S = hi(ADV)
FLUSH_ALL = hi(FLUSH)
CLAIM = hi(DUMP)
C_CLAIM, C_MISS, C_REFRESH, C_RELEASE = 0, 1, 2, 3


def put_a(key, ttls, rcode=0):
    assert len(ttls) < 8
    return bytes([PUT, key, rcode << 4, len(ttls)]) + b"".join(
        struct.pack(">H", t) for t in ttls)


def put_raw(key, body, counts, rcode=0, tc=False):
    return bytes([PUT, key, 1 | (2 if tc else 0) | rcode << 4, counts,
                  len(body)]) + body


def claim(kind, key, worker, wait=0, fraction=10):
    """fuzz_cache.c's op_claim: cache_claim (with wait or not),
    cache_claim_miss, cache_claim_refresh (1/fraction) or cache_release,
    of key by worker (0..3)."""
    b = key | worker << 3 | kind << 5 | (wait << 7 if kind == C_CLAIM else 0)
    return bytes([CLAIM, b]) + (bytes([fraction - 1])
                                if kind != C_RELEASE else b"")


def cache(ops, bound=64, stale=30):
    return bytes([bound, stale]) + ops


def cache_seeds():
    s = {}
    s["put-get"] = cache(put_a(0, [300]) + bytes([GET, 0, ADV_S, 0, 42,
                                                  GET, 0]))
    s["expire-stale"] = cache(put_a(1, [10, 20]) + bytes([ADV_S, 0, 15,
                                                          GET, 1, STALE, 1,
                                                          ADV_S, 0, 60,
                                                          STALE, 1]))
    s["evict"] = cache(b"".join(put_a(k, [100] * 7) for k in range(8)) +
                       bytes([GET, 0, GET, 7, DUMP]), bound=4)
    s["flush-subtree"] = cache(b"".join(put_a(k, [100]) for k in range(8)) +
                               bytes([FLUSHNAME, 0x10, GET, 2, GET, 6,
                                      FLUSHNAME, 3, DUMP]))
    s["flush-raw-name"] = cache(put_a(0, [5]) + bytes([FLUSHNAME, 0x30, 5]) +
                                b"\3www\0" + bytes([FLUSH_ALL, GET, 0]))
    s["resize"] = cache(b"".join(put_a(k, [100, 200]) for k in range(6)) +
                        bytes([RESIZE, 8, DUMP, RESIZE, 0, GET, 0,
                               RESIZE, 200]) + put_a(3, [1]))
    s["nxdomain-soa"] = cache(put_raw(0, soa(3600, 60), 1 << 4, rcode=3) +
                              bytes([GET, 0, ADV_S, 0, 61, GET, 0,
                                     STALE, 0]))
    s["servfail-refresh"] = cache(put_raw(2, b"", 0, rcode=2) + put_a(2, [50])
                                  + bytes([FLUSH, 2, ADV_S, 0, 51, STALE, 2]))
    s["opt-stripped"] = cache(put_raw(4, rr_a(77) + opt(do=True), 1 | 1 << 6)
                              + bytes([GET, 4, DUMP]))
    s["memfail"] = cache(bytes([CMEMFAIL, 0]) + put_a(0, [30]) +
                         bytes([CMEMFAIL, 1]) + put_a(1, [30]) +
                         bytes([GET, 0, GET, 1]))
    s["replace"] = cache(put_a(5, [100]) + put_a(5, [3, 4]) +
                         bytes([ADV, 0, 200, GET, 5]))
    s["truncated-uncacheable"] = cache(put_raw(0, rr_a(9), 1, tc=True) +
                                       bytes([GET, 0]))
    # Fresh at the claim, then expired: worker 1 owns the fetch, 2 waits,
    # 3 is busy (plain and refresh); only the owner's release ends it,
    # with worker 2's bit; a new answer makes a refresh's claim busy.
    s["claims"] = cache(put_a(0, [100]) + claim(C_MISS, 0, 1) +
                        bytes([ADV_S, 0, 200]) + claim(C_MISS, 0, 1) +
                        claim(C_MISS, 0, 2) + claim(C_CLAIM, 0, 3) +
                        claim(C_CLAIM, 0, 1, wait=1) +
                        claim(C_REFRESH, 0, 3) + claim(C_RELEASE, 0, 2) +
                        claim(C_RELEASE, 0, 1) + put_a(0, [100]) +
                        claim(C_REFRESH, 0, 2) + claim(C_RELEASE, 0, 1),
                        bound=0x40, stale=0x10)
    # Found by CI's fuzzer (9e9061e): a TTL past CACHE_TTL_MAX, which the
    # model expected back unshortened.
    s["long-ttl-clamped"] = bytes.fromhex(
        "401e0005401eb5b5b5b5b5b5b5b5b5b5b5b5b5b5b5b5b5b5b5b5b5b5b5b5b5b5"
        "b5b5b5b5b5b5b5b5b5b5b5b5b5b5b5b5b5b5b5b5b5b5b5b5b5b5b5b5b5b5b5b5"
        "b5b5b5b5b5b5b5b5b5b5b5b5b5b5000000000000000000000000000000000000"
        "00b5b5b5b5b5b5b5b5b5b5b5b50000030110c00c00010001000000090004c000"
        "020103000001006400050025000300040500c8")
    return s


# ---- conf ----

def conf_seeds():
    s = {}
    confdir = os.path.join(TOP, "tests", "conf")
    for f in sorted(os.listdir(confdir)):
        if f.endswith(".conf"):
            with open(os.path.join(confdir, f), "rb") as fh:
                s[f[:-5]] = fh.read()
    with open(os.path.join(TOP, "contrib", "dotproxy.conf.example"),
              "rb") as fh:
        s["example"] = fh.read()
    s["cmdline-upstream"] = (b"::1@8853#dns.example pin-sha256="
                             b"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n")
    s["durations"] = (b"query-timeout 1500ms\nidle-timeout 2m\n"
                      b"cache-max-ttl 1d\ncache-size 3G\nlameduck 0\n")
    s["nul-byte"] = b"log-level debug\n\0\n"
    s["no-newline"] = b"listen 127.0.0.1@5353"
    return s


def write(target, seeds):
    d = os.path.join(CORPUS, target)
    if os.path.isdir(d):
        shutil.rmtree(d)
    os.makedirs(d)
    for label, data in sorted(seeds.items()):
        with open(os.path.join(d, label), "wb") as fh:
            fh.write(data)
    return len(seeds)


def main():
    total = 0
    for target, fn in (("dnsmsg", dnsmsg_seeds), ("upstream", upstream_seeds),
                       ("cache", cache_seeds), ("conf", conf_seeds)):
        n = write(target, fn())
        total += n
        print("%-9s %3d seeds" % (target, n))
    return 0 if total else 1


if __name__ == "__main__":
    sys.exit(main())

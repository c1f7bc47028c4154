"""The per-pixel model and the binary range coder, compiled with numba.

One function codes in both directions: the encoder and the decoder run the same statements on
the same causal state, so they cannot drift apart. Every value on the probability path is an
integer; nothing depends on the platform's floating point.
"""

from __future__ import annotations

import numba as nb
import numpy as np

# The least-squares predictor: W plus weighted differences of these neighbours to W, so that
# weights quantised to LS_SHIFT bits cost nothing at a high DC level (signed data arrives offset
# by 2**15). Order as in docs/pred-bitstream.md.
N_LS = 17
TAP_DY = np.array([-1, -1, -1, 0, -2, -1, -2, -2, -1, 0, -3, -2, -2, -1, -1, -3, -3], dtype=np.int64)
TAP_DX = np.array([0, -1, 1, -2, 0, -2, -1, 1, 2, -3, 0, -2, 2, -3, 3, -1, 1], dtype=np.int64)
N_GCLS = 4  # weight sets by local gradient ...
N_ICLS = 2  # ... times by intensity
N_CLS = N_GCLS * N_ICLS
LS_SHIFT = 12

# Causal features of the learned context model, and the scale of its output (see model.py).
N_FEATURES = 8
NET_SHIFT = 16

# Regular mode: activity classes x intensity classes select the adaptive probabilities.
N_ACT = 36
N_INT = 4
N_CTX = N_ACT * N_INT
# Two-value mode: which of N, NW, NE, WW, NN equal W, and whether a second value is present.
N_BCTX = 64
N_BUCKETS = 18  # magnitude classes 0, 1, 2-3, 4-7, ...: a 17-bit magnitude is the most there is
N_BIAS = 8 * 16  # bias-cancellation contexts: activity octave x texture pattern

# Slots of a probability row: zero flag, sign (9 neighbour-sign classes), bucket ladder, the two
# mantissa bits below the leading one. Two-value rows use slots 0 and 1.
_P_ZERO = 0
_P_SIGN = 1
_P_BUCKET = _P_SIGN + 9
_P_MANT = _P_BUCKET + N_BUCKETS
N_SLOTS = _P_MANT + 3 * N_BUCKETS

STATUS_OK = 0
STATUS_OVERFLOW = 1  # encoder: the output buffer is full
STATUS_CORRUPT = 2  # decoder: a decoded value left the coded range

_TOP = 1 << 24
_MASK32 = 0xFFFFFFFF
_PROB_ONE = 1 << 16
_PROB_HALF = 1 << 15
_PROB_MIN = 16
_PROB_MAX = _PROB_ONE - 16
# Estimates carry 6 bits more than the coder uses, so that a slow estimate still converges to
# near-certainty (flat areas) instead of stalling where its update step rounds to zero.
_EST_SHIFT = 6
_EST_ONE = _PROB_ONE << _EST_SHIFT
_RATE_FAST = 5
_RATE_SLOW = 8


@nb.njit(cache=True, nogil=True, inline="always")
def _bitlength(v: int) -> int:
    n = 0
    while v > 0:
        v >>= 1
        n += 1
    return n


@nb.njit(cache=True, nogil=True, inline="always")
def _log4(v: int) -> int:
    """log2(v) in quarter octaves: 4 x bit length plus the two bits below the leading one."""
    q = _bitlength(v)
    if q >= 3:
        return 4 * q + ((v >> (q - 3)) & 3)
    return 4 * q + ((v << (3 - q)) & 3) if q > 0 else 0


@nb.njit(cache=True, nogil=True, inline="always")
def _shift_low(low, cache, csize, pos, buf, end):  # type: ignore[no-untyped-def]
    """LZMA's carry-propagating byte output. Past `end` nothing is written but `pos` still
    counts, so the caller sees the overflow."""
    if low < 0xFF000000 or low > _MASK32:
        carry = low >> 32
        temp = cache
        while True:
            if pos < end:
                buf[pos] = (temp + carry) & 0xFF
            pos += 1
            temp = 0xFF
            csize -= 1
            if csize == 0:
                break
        cache = (low >> 24) & 0xFF
    csize += 1
    low = (low & 0x00FFFFFF) << 8
    return low, cache, csize, pos


@nb.njit(cache=True, nogil=True, inline="always")
def _code_bit(s, buf, end, encode, bit, p1):  # type: ignore[no-untyped-def]
    """Code `bit` (encoder) or read the next bit (decoder) with P(1) = p1 / 2**16.

    The coder state travels as a tuple (low, range, cache, cache size, position, code) so that
    it stays in registers; returns the new state and the bit.
    """
    low, rng, cache, csize, pos, code = s
    bound = (rng >> 16) * p1
    if encode:
        if bit:
            rng = bound
        else:
            low += bound
            rng -= bound
    else:
        if code < bound:
            rng = bound
            bit = 1
        else:
            code -= bound
            rng -= bound
            bit = 0
    while rng < _TOP:
        rng = (rng << 8) & _MASK32
        if encode:
            low, cache, csize, pos = _shift_low(low, cache, csize, pos, buf, end)
        else:
            b = np.int64(buf[pos]) if pos < end else np.int64(0)
            pos += 1
            code = ((code << 8) | b) & _MASK32
    return (low, rng, cache, csize, pos, code), bit


@nb.njit(cache=True, nogil=True, inline="always")
def _model_bit(s, buf, end, encode, bit, prob, row, slot):  # type: ignore[no-untyped-def]
    """Code a bit with an adaptive probability: the mean of a fast and a slow estimate, both
    learning faster over their first observations."""
    pf = prob[0, row, slot]
    ps = prob[1, row, slot]
    p1 = (pf + ps) >> (1 + _EST_SHIFT)
    if p1 < _PROB_MIN:
        p1 = _PROB_MIN
    elif p1 > _PROB_MAX:
        p1 = _PROB_MAX
    s, bit = _code_bit(s, buf, end, encode, bit, p1)
    c = prob[2, row, slot]
    target = _EST_ONE if bit else 0
    prob[0, row, slot] = pf + ((target - pf) >> (c + 1 if c < _RATE_FAST else _RATE_FAST))
    prob[1, row, slot] = ps + ((target - ps) >> (c + 1 if c < _RATE_SLOW else _RATE_SLOW))
    if c < _RATE_SLOW:
        prob[2, row, slot] = c + 1
    return s, bit


@nb.njit(cache=True, nogil=True)
def code_frame(img, encode, maxval, ls_weights, cls_thr, net_w1, net_b1, net_w2, net_b2, buf, in_len, dump):  # type: ignore[no-untyped-def]
    """Encode `img` into `buf` (encode=True) or decode `buf[:in_len]` into `img`.

    `img` is int32 (rows, columns). A `dump` of rows x columns rows receives each pixel's
    context features, its hand-designed context and its error (training data for model.py).
    Returns (status, bytes written or read).
    """
    rows, cols = img.shape
    hidden = net_w1.shape[0]
    dumping = dump.shape[0] == rows * cols
    feats = np.zeros(N_FEATURES, dtype=np.int64)

    end = np.int64(buf.shape[0]) if encode else np.int64(in_len)
    code = np.int64(0)
    if not encode:
        for i in range(5):
            b = np.int64(buf[i]) if i < end else np.int64(0)
            code = ((code << 8) | b) & _MASK32
    st = (np.int64(0), np.int64(_MASK32), np.int64(0), np.int64(1), np.int64(0 if encode else 5), code)
    status = STATUS_OK

    # prob[0]: fast estimate, prob[1]: slow estimate, prob[2]: observations so far (capped).
    prob = np.zeros((3, N_CTX + N_BCTX, N_SLOTS), dtype=np.int64)
    prob[0] = _EST_ONE >> 1
    prob[1] = _EST_ONE >> 1
    bias_sum = np.zeros(N_BIAS, dtype=np.int64)
    bias_cnt = np.zeros(N_BIAS, dtype=np.int64)

    # Per column, for this row and the one above: the final residual and the least-squares
    # predictor's absolute error, both in 1/8 units. Column x is at index x + 1.
    res = np.zeros((2, cols + 2), dtype=np.int64)
    lerr = np.zeros((2, cols + 2), dtype=np.int64)
    maxval8 = np.int64(maxval) << 3

    for y in range(rows):
        cur = y & 1
        prv = cur ^ 1
        for x in range(cols):
            # Causal neighbours, replicated inwards at the borders.
            if x > 0:
                w = np.int64(img[y, x - 1])
            elif y > 0:
                w = np.int64(img[y - 1, x])
            else:
                w = np.int64(0)
            n = np.int64(img[y - 1, x]) if y > 0 else w
            nw = np.int64(img[y - 1, x - 1]) if (y > 0 and x > 0) else n
            ne = np.int64(img[y - 1, x + 1]) if (y > 0 and x + 1 < cols) else n
            ww = np.int64(img[y, x - 2]) if x > 1 else w
            nn = np.int64(img[y - 2, x]) if y > 1 else n
            xi = x + 1
            value = np.int64(img[y, x]) if encode else np.int64(0)

            # Two-value mode: where the neighbourhood holds at most two values (flat padding,
            # burned-in text, masks), first ask whether the pixel repeats one of them.
            pattern = 0
            other = w
            two = True
            for i, v in enumerate((n, nw, ne, ww, nn)):
                if v == w:
                    pattern |= 1 << i
                elif other == w:
                    other = v
                elif v != other:
                    two = False
                    break
            if two:
                brow = N_CTX + pattern + (32 if other != w else 0)
                st, hit = _model_bit(st, buf, end, encode, 1 if value == w else 0, prob, brow, 0)
                if hit:
                    value = w
                elif other != w:
                    st, hit = _model_bit(st, buf, end, encode, 1 if value == other else 0, prob, brow, 1)
                    if hit:
                        value = other
                two = hit == 1  # otherwise escape: the regular mode codes the pixel
                if two:
                    if not encode:
                        img[y, x] = value
                    res[cur, xi] = (value - w) << 3
                    lerr[cur, xi] = res[cur, xi] if value >= w else -res[cur, xi]
                    continue

            rw = res[cur, xi - 1] if x > 0 else 0
            rn = res[prv, xi] if y > 0 else 0
            rnw = res[prv, xi - 1] if (y > 0 and x > 0) else 0
            rne = res[prv, xi + 1] if (y > 0 and x + 1 < cols) else 0
            rww = res[cur, xi - 2] if x > 1 else rw

            grad = abs(n - nw) + abs(w - nw) + abs(ne - n) + abs(w - ww) + abs(n - nn)
            cls = 0
            while cls < N_GCLS - 1 and grad > cls_thr[cls]:
                cls += 1
            ic = 0
            while ic < N_ICLS - 1 and n > cls_thr[N_GCLS - 1 + ic]:
                ic += 1
            cls += N_GCLS * ic

            acc = np.int64(0)
            if y >= 3 and x >= 3 and x + 3 < cols:
                for i in range(N_LS):
                    acc += ls_weights[cls, i] * (np.int64(img[y + TAP_DY[i], x + TAP_DX[i]]) - w)
            else:
                for i in range(N_LS):
                    yy = y + TAP_DY[i]
                    xx = min(max(x + TAP_DX[i], 0), cols - 1)
                    if yy < 0:
                        yy = 0
                    if not (yy == y and xx >= x):
                        acc += ls_weights[cls, i] * (np.int64(img[yy, xx]) - w)
            pred8 = (w << 3) + (acc >> (LS_SHIFT - 3))
            pred8 = min(max(pred8, 0), maxval8)
            raw8 = pred8
            # The predictor's own recent errors around this pixel.
            near = lerr[prv, xi] + lerr[cur, xi - 1] + lerr[prv, xi - 1] + lerr[prv, xi + 1] + (lerr[prv, xi] >> 1)

            # Activity: what neighbouring errors and the local gradient say about this error.
            act = (abs(rw) + abs(rn) + (abs(rnw) + abs(rne)) // 2) + (near >> 2) + (grad << 1)
            q = _bitlength(act)
            if hidden > 0 or dumping:
                feats[0] = _log4(abs(rw))
                feats[1] = _log4(abs(rn))
                feats[2] = _log4(abs(rnw))
                feats[3] = _log4(abs(rne))
                feats[4] = _log4(near)
                feats[5] = _log4(grad << 3)
                feats[6] = _log4(abs(rww))
                feats[7] = ((pred8 >> 3) * 16) // (maxval + 1)
            if hidden == 0:
                ctx = 2 * q
                if q >= 2 and (act >> (q - 2)) & 1:
                    ctx += 1
            else:
                out = net_b2[0]
                for h in range(hidden):
                    t = net_b1[h]
                    for i in range(N_FEATURES):
                        t += net_w1[h, i] * feats[i]
                    if t > 0:
                        out += net_w2[h] * t
                ctx = out >> NET_SHIFT
                if ctx < 0:
                    ctx = 0
            if ctx >= N_ACT:
                ctx = N_ACT - 1
            if dumping:
                at = y * cols + x
                for i in range(N_FEATURES):
                    dump[at, i] = feats[i]
                dump[at, N_FEATURES] = ctx
            row = ctx + N_ACT * ((((pred8 + 4) >> 3) * N_INT) // (maxval + 1))

            # Bias cancellation per activity octave and texture pattern (CALIC-style).
            p_int = pred8 >> 3
            tex = (1 if n > p_int else 0) | (2 if w > p_int else 0) | (4 if nw > p_int else 0) | (8 if ne > p_int else 0)
            bctx = min(q >> 1, 7) * 16 + tex
            cnt = bias_cnt[bctx]
            if cnt > 0:
                s = bias_sum[bctx]
                if s >= 0:
                    pred8 += (s + (cnt >> 1)) // cnt
                else:
                    pred8 -= (-s + (cnt >> 1)) // cnt
            pred8 = min(max(pred8, 0), maxval8)
            pred = (pred8 + 4) >> 3

            # The residual: zero?, sign, magnitude class on a unary ladder, two modelled
            # mantissa bits, then the remaining mantissa bits at probability one half.
            e = value - pred
            mag = abs(e)
            st, zero = _model_bit(st, buf, end, encode, 1 if mag == 0 else 0, prob, row, _P_ZERO)
            if zero:
                e = np.int64(0)
            else:
                sw = 0 if rw == 0 else (1 if rw > 0 else 2)
                sn = 0 if rn == 0 else (1 if rn > 0 else 2)
                st, neg = _model_bit(st, buf, end, encode, 1 if e < 0 else 0, prob, row, _P_SIGN + sw * 3 + sn)
                k = _bitlength(mag - 1)
                j = 0
                while j < N_BUCKETS - 1:
                    st, more = _model_bit(st, buf, end, encode, 1 if k > j else 0, prob, row, _P_BUCKET + j)
                    if not more:
                        break
                    j += 1
                if j < 2:
                    mag = j + 1
                else:
                    mant = np.int64(1)
                    nbits = j - 1
                    for i in range(nbits):
                        shift = nbits - 1 - i
                        bit = ((mag - 1) >> shift) & 1
                        if i == 0:
                            st, bit = _model_bit(st, buf, end, encode, bit, prob, row, _P_MANT + 3 * j)
                        elif i == 1:
                            st, bit = _model_bit(st, buf, end, encode, bit, prob, row, _P_MANT + 3 * j + 1 + (mant & 1))
                        else:
                            st, bit = _code_bit(st, buf, end, encode, bit, _PROB_HALF)
                        mant = (mant << 1) | bit
                    mag = mant + 1
                e = -mag if neg else mag
            if not encode:
                value = pred + e
                if value < 0 or value > maxval:
                    status = STATUS_CORRUPT
                    break
                img[y, x] = value

            v8 = value << 3
            lerr[cur, xi] = abs(raw8 - v8)
            res[cur, xi] = v8 - pred8
            if dumping:
                dump[y * cols + x, N_FEATURES + 1] = abs(v8 - pred8)
            bias_sum[bctx] += v8 - raw8
            bias_cnt[bctx] += 1
            if bias_cnt[bctx] >= 64:
                # Halving keeps the estimate local: the bias of a region, not of the whole image.
                bias_cnt[bctx] >>= 1
                s = bias_sum[bctx]
                bias_sum[bctx] = s >> 1 if s >= 0 else -((-s) >> 1)
        if status != STATUS_OK or st[4] > end:
            break

    low, rng, cache, csize, pos, code = st
    if encode:
        for _ in range(5):
            low, cache, csize, pos = _shift_low(low, cache, csize, pos, buf, end)
        if pos > end:
            status = STATUS_OVERFLOW
    return status, pos

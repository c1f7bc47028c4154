"""The per-pixel model and the binary range coder, compiled with numba.

One function codes in both directions: the encoder and the decoder run the same statements on
the same causal state, so they cannot drift apart. Every value on the probability path is an
integer; nothing depends on the platform's floating point.
"""

from __future__ import annotations

import numba as nb
import numpy as np

# Sub-predictors blended by their recent errors: the transmitted least-squares predictor, the
# JPEG-LS median edge detector, two error-corrected neighbours and the gradient plane.
# Neighbours the least-squares predictor weighs, in this order (see docs/pred-bitstream.md).
# The predictor is W plus weighted differences to W, so weights quantised to LS_SHIFT bits cost
# nothing at a high DC level (signed data arrives offset by 2**15).
N_LS = 17
TAP_DY = np.array([-1, -1, -1, 0, -2, -1, -2, -2, -1, 0, -3, -2, -2, -1, -1, -3, -3], dtype=np.int64)
TAP_DX = np.array([0, -1, 1, -2, 0, -2, -1, 1, 2, -3, 0, -2, 2, -3, 3, -1, 1], dtype=np.int64)
N_GCLS = 4  # least-squares classes by local gradient ...
N_ICLS = 2  # ... times classes by intensity
N_CLS = N_GCLS * N_ICLS
LS_SHIFT = 12  # weights in units of 2**-12

# Causal features of the learned context model, and its output scale (see model.py).
N_FEATURES = 8
NET_SHIFT = 12

# Activity classes select the adaptive probabilities of every binary decision.
N_ACT = 36
N_INT = 4
N_CTX = N_ACT * N_INT
N_BUCKETS = 18  # magnitude classes: 0, 1, 2-3, 4-7, ... up to 2**17
N_BIAS = 8 * 16  # bias-cancellation contexts: activity octave x texture pattern

# Slots of the probability table: zero flag, sign (9 neighbour-sign classes), bucket ladder,
# first mantissa bit per bucket.
_P_ZERO = 0
_P_SIGN = 1
_P_BUCKET = _P_SIGN + 9
_P_MANT = _P_BUCKET + N_BUCKETS
N_SLOTS = _P_MANT + 3 * N_BUCKETS

STATUS_OK = 0
STATUS_OVERFLOW = 1  # encoder: the output buffer is full
STATUS_CORRUPT = 2  # decoder: a decoded value left the coded range

_TOP = np.int64(1 << 24)
_MASK32 = np.int64(0xFFFFFFFF)
_PROB_ONE = 1 << 16
_PROB_MIN = 48
_PROB_MAX = _PROB_ONE - 48


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


@nb.njit(cache=True, nogil=True)
def code_frame(img, encode, maxval, ls_weights, cls_thr, net_w1, net_b1, net_w2, net_b2, buf, in_len, dump):  # type: ignore[no-untyped-def]
    """Encode `img` into `buf` (encode=True) or decode `buf[:in_len]` into `img`.

    `img` is int32 (rows, columns); `rc` is an int64 scratch array of 8 holding the coder state.
    Returns (status, bytes written) when encoding, (status, bytes read) when decoding.
    """
    rows, cols = img.shape
    hidden = net_w1.shape[0]
    dumping = dump.shape[0] == rows * cols
    feats = np.zeros(N_FEATURES, dtype=np.int64)
    # Coder state: low, range, cache, cache size, position (encoder); code, range, position (decoder).
    low = np.int64(0)
    rng = _MASK32
    cache = np.int64(0)
    cache_size = np.int64(1)
    pos = np.int64(0)
    code = np.int64(0)
    cap = buf.shape[0]
    if not encode:
        for _ in range(5):
            b = np.int64(0)
            if pos < in_len:
                b = np.int64(buf[pos])
            pos += 1
            code = ((code << 8) | b) & _MASK32
    status = STATUS_OK

    # Adaptive probabilities of a 1, two rates each plus a hit counter for a fast start.
    pfast = np.full((N_CTX, N_SLOTS), _PROB_ONE // 2, dtype=np.int64)
    pslow = np.full((N_CTX, N_SLOTS), _PROB_ONE // 2, dtype=np.int64)
    pcount = np.zeros((N_CTX, N_SLOTS), dtype=np.int64)

    bias_sum = np.zeros(N_BIAS, dtype=np.int64)
    bias_cnt = np.zeros(N_BIAS, dtype=np.int64)

    # Errors (in 1/8 units) of each sub-predictor and of the blend, for this row and the one above.
    w2 = cols + 2
    lerr = np.zeros((2, w2), dtype=np.int64)
    res = np.zeros((2, w2), dtype=np.int64)  # signed residual of the final prediction, 1/8 units
    maxval8 = np.int64(maxval) << 3

    for y in range(rows):
        cur = y & 1
        prv = cur ^ 1
        for x in range(cols):
            # Causal neighbours, replicated inwards at the borders (the same rule in both directions).
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

            # Errors of the neighbours: index x+1 is this column in the padded rows.
            xi = x + 1
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

            # Sub-predictions in 1/8 units.
            acc = np.int64(0)
            if y >= 3 and x >= 3 and x + 3 < cols:
                for i in range(N_LS):
                    acc += ls_weights[cls, i] * (np.int64(img[y + TAP_DY[i], x + TAP_DX[i]]) - w)
            else:
                for i in range(N_LS):
                    yy = y + TAP_DY[i]
                    xx = x + TAP_DX[i]
                    if xx < 0:
                        xx = 0
                    elif xx >= cols:
                        xx = cols - 1
                    if yy < 0:
                        yy = 0
                    if not (yy == y and xx >= x):
                        acc += ls_weights[cls, i] * (np.int64(img[yy, xx]) - w)
            pred8 = (w << 3) + (acc >> (LS_SHIFT - 3))
            if pred8 < 0:
                pred8 = np.int64(0)
            elif pred8 > maxval8:
                pred8 = maxval8
            # The predictor's own recent errors around this pixel.
            best = lerr[prv, xi] + lerr[cur, xi - 1] + lerr[prv, xi - 1] + lerr[prv, xi + 1] + (lerr[prv, xi] >> 1)
            raw8 = pred8

            # Activity: what the neighbours' errors and the predictor's recent errors say about
            # this pixel's error. q (its octave) also selects the bias-cancellation context.
            act = (abs(rw) + abs(rn) + (abs(rnw) + abs(rne)) // 2) + (best >> 2)
            act += grad << 1
            q = _bitlength(act)
            if hidden == 0:
                ctx = 2 * q
                if q >= 2 and (act >> (q - 2)) & 1:
                    ctx += 1
            else:
                feats[0] = _log4(abs(rw))
                feats[1] = _log4(abs(rn))
                feats[2] = _log4(abs(rnw))
                feats[3] = _log4(abs(rne))
                feats[4] = _log4(best)
                feats[5] = _log4(grad << 3)
                feats[6] = _log4(abs(rww))
                feats[7] = ((pred8 >> 3) * 16) // (maxval + 1)
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
            ctx += N_ACT * ((((pred8 + 4) >> 3) * N_INT) // (maxval + 1))
            if dumping:
                at = y * cols + x
                feats[0] = _log4(abs(rw))
                feats[1] = _log4(abs(rn))
                feats[2] = _log4(abs(rnw))
                feats[3] = _log4(abs(rne))
                feats[4] = _log4(best)
                feats[5] = _log4(grad << 3)
                feats[6] = _log4(abs(rww))
                feats[7] = ((pred8 >> 3) * 16) // (maxval + 1)
                for i in range(N_FEATURES):
                    dump[at, i] = feats[i]
                dump[at, N_FEATURES] = ctx

            # Bias cancellation per activity octave and texture pattern (CALIC-style).
            tex = 0
            p_int = pred8 >> 3
            if n > p_int:
                tex |= 1
            if w > p_int:
                tex |= 2
            if nw > p_int:
                tex |= 4
            if ne > p_int:
                tex |= 8
            bq = q >> 1
            if bq > 7:
                bq = 7
            bctx = bq * 16 + tex
            cnt = bias_cnt[bctx]
            if cnt > 0:
                s = bias_sum[bctx]
                if s >= 0:
                    pred8 += (s + (cnt >> 1)) // cnt
                else:
                    pred8 -= (-s + (cnt >> 1)) // cnt
            if pred8 < 0:
                pred8 = np.int64(0)
            elif pred8 > maxval8:
                pred8 = maxval8
            pred = (pred8 + 4) >> 3

            sw = 0 if rw == 0 else (1 if rw > 0 else 2)
            sn = 0 if rn == 0 else (1 if rn > 0 else 2)
            sctx = _P_SIGN + sw * 3 + sn

            if encode:
                e = np.int64(img[y, x]) - pred
            else:
                e = np.int64(0)

            # Binary decisions: zero?, sign, magnitude class (unary ladder), first mantissa bit,
            # raw low mantissa bits. One block for both directions.
            mag = abs(e)
            neg = 1 if e < 0 else 0
            k = _bitlength(mag - 1) if mag > 0 else 0
            decided_mag = np.int64(0)
            stage = 0  # 0 zero flag, 1 sign, 2 ladder, 3 mantissa top, 4 raw bits, 5 done
            j = 0
            kmax = N_BUCKETS - 1
            dk = 0
            mant = np.int64(0)
            nbits = 0
            while stage < 5:
                raw = False
                if stage == 0:
                    slot = _P_ZERO
                    bit = 1 if mag == 0 else 0
                elif stage == 1:
                    slot = sctx
                    bit = neg
                elif stage == 2:
                    slot = _P_BUCKET + j
                    bit = 1 if k > j else 0
                elif stage == 3:
                    # The two bits below the leading one are modelled, the first as context of the second.
                    slot = _P_MANT + 3 * dk + (0 if nbits == dk - 1 else 1 + (mant & 1))
                    bit = ((mag - 1) >> (nbits - 1)) & 1
                else:
                    slot = 0
                    raw = True
                    bit = ((mag - 1) >> (nbits - 1)) & 1
                # Code one bit.
                if raw:
                    rng = rng >> 1
                    if encode:
                        if bit:
                            low += rng
                    else:
                        if code >= rng:
                            code -= rng
                            bit = 1
                        else:
                            bit = 0
                else:
                    pf = pfast[ctx, slot]
                    ps = pslow[ctx, slot]
                    p1 = (pf + ps) >> 1
                    if p1 < _PROB_MIN:
                        p1 = _PROB_MIN
                    elif p1 > _PROB_MAX:
                        p1 = _PROB_MAX
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
                    c = pcount[ctx, slot]
                    sf = c + 1 if c < 5 else 5
                    ss = c + 1 if c < 8 else 8
                    if c < 8:
                        pcount[ctx, slot] = c + 1
                    target = np.int64(_PROB_ONE) if bit else np.int64(0)
                    pfast[ctx, slot] = pf + ((target - pf) >> sf)
                    pslow[ctx, slot] = ps + ((target - ps) >> ss)
                while rng < _TOP:
                    rng = (rng << 8) & _MASK32
                    if encode:
                        if low < 0xFF000000 or low > _MASK32:
                            carry = low >> 32
                            temp = cache
                            while True:
                                if pos >= cap:
                                    status = STATUS_OVERFLOW
                                    break
                                buf[pos] = (temp + carry) & 0xFF
                                pos += 1
                                temp = 0xFF
                                cache_size -= 1
                                if cache_size == 0:
                                    break
                            cache = (low >> 24) & 0xFF
                        cache_size += 1
                        low = (low & 0x00FFFFFF) << 8
                    else:
                        b = np.int64(0)
                        if pos < in_len:
                            b = np.int64(buf[pos])
                        pos += 1
                        code = ((code << 8) | b) & _MASK32
                # Advance the binarisation with the bit just coded.
                if stage == 0:
                    if bit:
                        stage = 5
                        decided_mag = 0
                    else:
                        stage = 1
                elif stage == 1:
                    neg = bit
                    stage = 2
                elif stage == 2:
                    if bit:
                        j += 1
                        if j >= kmax:
                            dk = j
                            stage = 3 if dk >= 2 else 5
                    else:
                        dk = j
                        stage = 3 if dk >= 2 else 5
                    if stage == 5:
                        decided_mag = dk + 1  # k 0 -> 1, k 1 -> 2
                    elif stage == 3:
                        mant = np.int64(1)
                        nbits = dk - 1
                elif stage == 3:
                    mant = (mant << 1) | bit
                    nbits -= 1
                    if nbits == 0:
                        stage = 5
                        decided_mag = mant + 1
                    elif nbits == dk - 3:
                        stage = 4
                else:
                    mant = (mant << 1) | bit
                    nbits -= 1
                    if nbits == 0:
                        stage = 5
                        decided_mag = mant + 1
            if status != STATUS_OK:
                break
            if encode:
                value = np.int64(img[y, x])
            else:
                e = -decided_mag if neg else decided_mag
                value = pred + e
                if value < 0 or value > maxval:
                    status = STATUS_CORRUPT
                    break
                img[y, x] = value

            # Update the causal state with the true value.
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
                bias_sum[bctx] = bias_sum[bctx] >> 1 if bias_sum[bctx] >= 0 else -((-bias_sum[bctx]) >> 1)
        if status != STATUS_OK:
            break

    if encode and status == STATUS_OK:
        for _ in range(5):
            if low < 0xFF000000 or low > _MASK32:
                carry = low >> 32
                temp = cache
                while True:
                    if pos >= cap:
                        status = STATUS_OVERFLOW
                        break
                    buf[pos] = (temp + carry) & 0xFF
                    pos += 1
                    temp = 0xFF
                    cache_size -= 1
                    if cache_size == 0:
                        break
                cache = (low >> 24) & 0xFF
            cache_size += 1
            low = (low & 0x00FFFFFF) << 8
    return status, pos

"""The per-pixel model and the binary range coder, compiled with numba.

One function codes in both directions: the encoder and the decoder run the same statements on
the same causal state, so they cannot drift apart. Every value on the probability path is an
integer; nothing depends on the platform's floating point.

mypy does not check this module: numba types it, and its scalar arithmetic mixes numpy and
Python integers in ways numpy's stubs reject. codec.py calls it through a typed wrapper.
"""
# mypy: ignore-errors

from __future__ import annotations

import numba as nb
import numpy as np

# The least-squares predictor: W plus weighted differences of these neighbours to W, so that
# weights quantised to LS_SHIFT bits cost nothing at a high DC level (signed data arrives offset
# by 2**15). Order as in docs/pred-bitstream.md.
N_LS = 23
TAP_DY = np.array([-1, -1, -1, 0, -2, -1, -2, -2, -1, 0, -3, -2, -2, -1, -1, -3, -3, -3, -3, -2, -2, -3, -3], dtype=np.int64)
TAP_DX = np.array([0, -1, 1, -2, 0, -2, -1, 1, 2, -3, 0, -2, 2, -3, 3, -1, 1, -2, 2, -3, 3, -3, 3], dtype=np.int64)
# With a reference frame (the previous slice of a series, already decoded), nine more taps:
# its pixel at this position and that pixel's eight neighbours. The reference is whole, so
# taps below and right of the pixel are as causal as those above and left.
N_REF = 9
REF_DY = np.array([0, 0, -1, 0, 1, -1, -1, 1, 1], dtype=np.int64)
REF_DX = np.array([0, -1, 0, 1, 0, -1, 1, -1, 1], dtype=np.int64)
N_GCLS = 4  # weight sets by local gradient ...
N_OCLS = 2  # ... times by orientation (horizontal activity above vertical, or not)
N_CLS = N_GCLS * N_OCLS
LS_SHIFT = 12

# Causal features of the learned context model, and the scale of its output (see model.py).
N_FEATURES = 8
NET_SHIFT = 16

# Regular mode: activity classes x intensity classes (at transmitted thresholds) select the
# adaptive probabilities.
N_ACT = 36
N_INT = 4
N_CTX = N_ACT * N_INT
# Two-value mode: which of N, NW, NE, WW, NN equal W, and whether a second value is present.
N_BCTX = 64
N_BUCKETS = 18  # magnitude classes 0, 1, 2-3, 4-7, ...: a 17-bit magnitude is the most there is
N_BIAS = 4 * 8 * 64  # bias-cancellation contexts: intensity class x activity octave x texture pattern

# Slots of a probability row: zero flag, sign (9 neighbour-sign classes), bucket ladder, the two
# mantissa bits below the leading one. Two-value rows use slots 0 and 1.
_P_ZERO = 0
_P_SIGN = 1
_P_BUCKET = _P_SIGN + 9
_P_DOWN = _P_BUCKET + N_BUCKETS
_P_MANT = _P_DOWN + N_BUCKETS
N_SLOTS = _P_MANT + 3 * N_BUCKETS
# Stages of the binary decisions of one pixel.
S_TWO1, S_TWO2, S_PRED, S_ZERO, S_SIGN, S_START, S_UP, S_DOWN, S_M1, S_M2, S_RAW, S_DONE = range(12)

# The ladder starts at the magnitude class the activity class makes likely, and walks up or
# down from there: about two decisions per pixel instead of one per class.
_START_OFFSET = 6

_NO_REF = np.zeros((1, 1), dtype=np.int32)

STATUS_OK = 0
STATUS_OVERFLOW = 1  # encoder: the output buffer is full
STATUS_CORRUPT = 2  # decoder: a decoded value left the coded range

_TOP = 1 << 24
_MASK32 = 0xFFFFFFFF
_PROB_ONE = 1 << 16
_PROB_MIN = 16
_PROB_MAX = _PROB_ONE - 16
# Estimates carry 6 bits more than the coder uses, so that a slow estimate still converges to
# near-certainty (flat areas) instead of stalling where its update step rounds to zero.
_EST_SHIFT = 6
_EST_ONE = _PROB_ONE << _EST_SHIFT
_RATE_FAST = 5
_RATE_SLOW = 8


@nb.njit(cache=True, nogil=True, inline="always")
def _bitlength(v):
    """Bits needed for v >= 0 (0 for 0), by halving: a handful of steps, not one per bit."""
    if v <= 0:
        return 0
    n = 1
    if v >= 1 << 32:
        v >>= 32
        n += 32
    if v >= 1 << 16:
        v >>= 16
        n += 16
    if v >= 1 << 8:
        v >>= 8
        n += 8
    if v >= 1 << 4:
        v >>= 4
        n += 4
    if v >= 1 << 2:
        v >>= 2
        n += 2
    if v >= 1 << 1:
        n += 1
    return n


@nb.njit(cache=True, nogil=True, inline="always")
def _log4(v):
    """log2(v) in quarter octaves: 4 x bit length plus the two bits below the leading one."""
    q = _bitlength(v)
    if q >= 3:
        return 4 * q + ((v >> (q - 3)) & 3)
    return 4 * q + ((v << (3 - q)) & 3) if q > 0 else 0


@nb.njit(cache=True, nogil=True, error_model="numpy")
def code_frame(img, encode, maxval, ls_weights, cls_thr, net_w1, net_b1, net_w2, net_b2, buf, in_len, dump, tol):
    """`_code_frame` for a frame coded on its own: compiled without the reference code."""
    return _code_frame(img, encode, maxval, ls_weights, cls_thr, net_w1, net_b1, net_w2, net_b2, buf, in_len, dump,
                       tol, _NO_REF, False)


@nb.njit(cache=True, nogil=True, error_model="numpy")
def code_referenced_frame(img, encode, maxval, ls_weights, cls_thr, net_w1, net_b1, net_w2, net_b2, buf, in_len, dump,
                          tol, ref):
    """`_code_frame` for a frame predicted from the reference frame `ref` as well."""
    return _code_frame(img, encode, maxval, ls_weights, cls_thr, net_w1, net_b1, net_w2, net_b2, buf, in_len, dump,
                       tol, ref, True)


@nb.njit(nogil=True, error_model="numpy", inline="always")
def _code_frame(img, encode, maxval, ls_weights, cls_thr, net_w1, net_b1, net_w2, net_b2, buf, in_len, dump, tol, ref,
                referenced):
    """Encode `img` into `buf` (encode=True) or decode `buf[:in_len]` into `img`.

    `img` is int32 (rows, columns). A `dump` of rows x columns rows receives each pixel's
    context features, its hand-designed context and its error (training data for model.py).
    A `tol` of rows x columns values is each pixel's allowed absolute error (near-lossless with
    in-loop quantisation: the encoder overwrites `img` with what the decoder will rebuild);
    empty, every pixel is exact and the bitstream is the lossless one. Pixels with a tolerance
    have probability rows of their own, so exact pixels code as they would without them.
    A `ref` of the frame's shape is the reference frame: `ls_weights` then has N_LS + N_REF
    columns, the last N_REF for its taps; empty, the frame is coded on its own.
    Returns (status, bytes written or read).
    """
    rows, cols = img.shape
    hidden = net_w1.shape[0]
    dumping = dump.shape[0] == rows * cols
    tolerant = tol.shape[0] == rows * cols
    feats = np.zeros(N_FEATURES, dtype=np.int64)

    # The range coder (LZMA's): its state lives in these locals, and every binary decision of
    # a pixel goes through the one coding step in the stage loop below, so that nothing of it
    # is passed to a helper (numba would count references to the arrays on every call).
    end = np.int64(buf.shape[0]) if encode else np.int64(in_len)
    low = np.int64(0)
    rng = np.int64(_MASK32)
    cache = np.int64(0)
    csize = np.int64(1)
    pos = np.int64(0)
    code = np.int64(0)
    if not encode:
        for i in range(5):
            byte = np.int64(buf[i]) if i < end else np.int64(0)
            code = ((code << 8) | byte) & _MASK32
        pos = np.int64(5)
    status = STATUS_OK

    # Per row and slot: fast estimate, slow estimate, observations so far (capped), padding.
    prob = np.zeros(((N_CTX + N_BCTX) * (2 if tolerant else 1), N_SLOTS, 4), dtype=np.int32)
    prob[:, :, 0] = _EST_ONE >> 1
    prob[:, :, 1] = _EST_ONE >> 1
    bias_sum = np.zeros(N_BIAS, dtype=np.int64)
    bias_cnt = np.zeros(N_BIAS, dtype=np.int64)

    # Per column, for this row and the one above: the final residual and the least-squares
    # predictor's absolute error, both in 1/8 units. Column x is at index x + 1.
    res = np.zeros((2, cols + 2), dtype=np.int64)
    lerr = np.zeros((2, cols + 2), dtype=np.int64)
    maxval8 = np.int64(maxval) << 3
    # Inside the image the taps are fixed offsets into the flat pixel buffer.
    flat = img.reshape(rows * cols)
    offsets = TAP_DY * cols + TAP_DX
    rflat = ref.reshape(ref.shape[0] * ref.shape[1])
    roffsets = REF_DY * cols + REF_DX
    # The learned model's intensity feature: the top four bits of the coded range.
    int_shift16 = max(_bitlength(maxval) - 4, 0)
    # Rounded reciprocals: the bias mean as a multiply, not a division per pixel.
    recip = np.zeros(65, dtype=np.int64)
    for i in range(1, 65):
        recip[i] = ((1 << 16) + (i >> 1)) // i

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
            allow = np.int64(tol[y * cols + x]) if tolerant else np.int64(0)
            # Tolerant pixels: quantisation step of the residual, and the first of their rows.
            qstep = 2 * allow + 1
            rbase = N_CTX + N_BCTX if allow > 0 else 0

            # Two-value mode: where the neighbourhood holds at most two values (flat padding,
            # burned-in text, masks), first ask whether the pixel repeats one of them. With a
            # tolerance, "repeats" means within it: JPEG-LS run mode's idea.
            pattern = 0
            other = w
            two = True
            for i, v in enumerate((n, nw, ne, ww, nn)):
                if abs(v - w) <= allow:
                    pattern |= 1 << i
                elif other == w:
                    other = v
                elif abs(v - other) > allow:
                    two = False
                    break
            brow = rbase + N_CTX + pattern + (32 if other != w else 0)

            # Regular-mode state, set in the S_PRED stage.
            row = 0
            sctx = 0
            bctx = 0
            q = 0
            ctx = 0
            pred = np.int64(0)
            pred8 = np.int64(0)
            raw8 = np.int64(0)
            rw = np.int64(0)
            mag = np.int64(0)
            k = 0
            j = 0
            neg = 0
            mant = np.int64(1)
            left = 0
            step = 0
            hit = False

            stage = S_TWO1 if two else S_PRED
            while stage != S_DONE:
                if stage == S_PRED:
                    rw = res[cur, xi - 1] if x > 0 else 0
                    rn = res[prv, xi] if y > 0 else 0
                    rnw = res[prv, xi - 1] if (y > 0 and x > 0) else 0
                    rne = res[prv, xi + 1] if (y > 0 and x + 1 < cols) else 0

                    grad = abs(n - nw) + abs(w - nw) + abs(ne - n) + abs(w - ww) + abs(n - nn)
                    agrad = grad  # the gradient the activity uses
                    if referenced:
                        # The gradient of the difference to the reference (small where this
                        # slice is the reference plus a smooth change) stands for half of the
                        # local gradient in the activity, and the reference's Laplacian here
                        # adds what the causal neighbours cannot see: texture at and below.
                        if 1 < y < rows - 1 and 1 < x < cols - 1:
                            at = y * cols + x
                            r_w = np.int64(rflat[at - 1])
                            r_n = np.int64(rflat[at - cols])
                            r_nw = np.int64(rflat[at - cols - 1])
                            r_ne = np.int64(rflat[at - cols + 1])
                            r_ww = np.int64(rflat[at - 2])
                            r_nn = np.int64(rflat[at - 2 * cols])
                            r_c = np.int64(rflat[at])
                            r_e = np.int64(rflat[at + 1])
                            r_s = np.int64(rflat[at + cols])
                        else:
                            y1 = max(y - 1, 0)
                            x1 = max(x - 1, 0)
                            xe = min(x + 1, cols - 1)
                            r_w = np.int64(ref[y, x1])
                            r_n = np.int64(ref[y1, x])
                            r_nw = np.int64(ref[y1, x1])
                            r_ne = np.int64(ref[y1, xe])
                            r_ww = np.int64(ref[y, max(x - 2, 0)])
                            r_nn = np.int64(ref[max(y - 2, 0), x])
                            r_c = np.int64(ref[y, x])
                            r_e = np.int64(ref[y, xe])
                            r_s = np.int64(ref[min(y + 1, rows - 1), x])
                        dw = w - r_w
                        dn = n - r_n
                        dnw = nw - r_nw
                        dne = ne - r_ne
                        dww = ww - r_ww
                        dnn = nn - r_nn
                        dgrad = abs(dn - dnw) + abs(dw - dnw) + abs(dne - dn) + abs(dw - dww) + abs(dn - dnn)
                        lap = abs(4 * r_c - r_w - r_n - r_e - r_s)
                        agrad = ((grad + dgrad) >> 1) + lap
                    cls = 0
                    while cls < N_GCLS - 1 and grad > cls_thr[cls]:
                        cls += 1
                    if abs(w - ww) + abs(n - nw) > abs(w - nw) + abs(n - nn):
                        cls += N_GCLS

                    acc = np.int64(0)
                    if y >= 3 and x >= 3 and x + 3 < cols:
                        at = y * cols + x
                        for i in range(N_LS):
                            acc += ls_weights[cls, i] * (np.int64(flat[at + offsets[i]]) - w)
                    else:
                        for i in range(N_LS):
                            yy = max(y + TAP_DY[i], 0)
                            xx = min(max(x + TAP_DX[i], 0), cols - 1)
                            if not (yy == y and xx >= x):
                                acc += ls_weights[cls, i] * (np.int64(img[yy, xx]) - w)
                    if referenced:
                        if 0 < y < rows - 1 and 0 < x < cols - 1:
                            at = y * cols + x
                            for i in range(N_REF):
                                acc += ls_weights[cls, N_LS + i] * (np.int64(rflat[at + roffsets[i]]) - w)
                        else:
                            for i in range(N_REF):
                                yy = min(max(y + REF_DY[i], 0), rows - 1)
                                xx = min(max(x + REF_DX[i], 0), cols - 1)
                                acc += ls_weights[cls, N_LS + i] * (np.int64(ref[yy, xx]) - w)
                    pred8 = min(max((w << 3) + (acc >> (LS_SHIFT - 3)), 0), maxval8)
                    raw8 = pred8
                    # The predictor's own recent errors around this pixel.
                    near = lerr[prv, xi] + lerr[cur, xi - 1] + lerr[prv, xi - 1] + lerr[prv, xi + 1] + (lerr[prv, xi] >> 1)

                    # Activity: what neighbouring errors and the local gradient say about this error.
                    act = (abs(rw) + abs(rn) + (abs(rnw) + abs(rne)) // 2) + (near >> 2) + (agrad << 1)
                    if allow > 0:
                        act //= qstep  # the quantised residual's scale
                    q = _bitlength(act)
                    if hidden > 0 or dumping:
                        feats[0] = _log4(abs(rw))
                        feats[1] = _log4(abs(rn))
                        feats[2] = _log4(abs(rnw))
                        feats[3] = _log4(abs(rne))
                        feats[4] = _log4(near)
                        feats[5] = _log4(grad << 3)
                        feats[6] = _log4(act)
                        feats[7] = (pred8 >> 3) >> int_shift16
                    if hidden == 0 or allow > 0:
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
                        ctx = max(out >> NET_SHIFT, 0)
                    ctx = min(ctx, N_ACT - 1)
                    if dumping:
                        at = y * cols + x
                        for i in range(N_FEATURES):
                            dump[at, i] = feats[i]
                        dump[at, N_FEATURES] = ctx
                    pv = (pred8 + 4) >> 3
                    ic = 0
                    while ic < N_INT - 1 and pv > cls_thr[N_GCLS - 1 + ic]:
                        ic += 1
                    row = rbase + ctx + N_ACT * ic

                    # Bias cancellation per activity octave and texture pattern (CALIC-style).
                    p_int = pred8 >> 3
                    tex = (1 if n > p_int else 0) | (2 if w > p_int else 0) | (4 if nw > p_int else 0) | (8 if ne > p_int else 0)
                    tex |= (16 if ww > p_int else 0)
                    if referenced:
                        tex |= 32 if ref[y, x] > p_int else 0
                    else:
                        tex |= 32 if nn > p_int else 0
                    bctx = (ic * 8 + min(q >> 1, 7)) * 64 + tex
                    cnt = bias_cnt[bctx]
                    if cnt > 0:
                        bs = bias_sum[bctx]
                        if bs >= 0:
                            pred8 += ((bs + (cnt >> 1)) * recip[cnt]) >> 16
                        else:
                            pred8 -= ((-bs + (cnt >> 1)) * recip[cnt]) >> 16
                    pred8 = min(max(pred8, 0), maxval8)
                    pred = (pred8 + 4) >> 3

                    sw = 0 if rw == 0 else (1 if rw > 0 else 2)
                    sn = 0 if rn == 0 else (1 if rn > 0 else 2)
                    sctx = _P_SIGN + sw * 3 + sn
                    e = value - pred
                    mag = abs(e) if allow == 0 else (abs(e) + allow) // qstep
                    neg = 1 if e < 0 else 0
                    k = _bitlength(mag - 1)
                    # The ladder starts at the class the activity makes likely.
                    j = min(max((ctx >> 1) - _START_OFFSET, 0), N_BUCKETS - 2)
                    stage = S_ZERO
                    continue

                # The decision of this stage: its probability row and slot, and (encoder) the bit.
                modelled = True
                r = row
                if stage == S_TWO1:
                    r = brow
                    slot = 0
                    bit = 1 if abs(value - w) <= allow else 0
                elif stage == S_TWO2:
                    r = brow
                    slot = 1
                    bit = 1 if abs(value - other) <= allow else 0
                elif stage == S_ZERO:
                    slot = _P_ZERO
                    bit = 1 if mag == 0 else 0
                elif stage == S_SIGN:
                    slot = sctx
                    bit = neg
                elif stage == S_START:
                    slot = _P_DOWN
                    bit = 1 if k >= j else 0
                elif stage == S_UP:
                    slot = _P_BUCKET + j
                    bit = 1 if k > j else 0
                elif stage == S_DOWN:
                    slot = _P_DOWN + j
                    bit = 1 if k < j else 0
                elif stage == S_M1:
                    slot = _P_MANT + 3 * j
                    bit = ((mag - 1) >> (j - 2)) & 1
                elif stage == S_M2:
                    slot = _P_MANT + 3 * j + 1 + (mant & 1)
                    bit = ((mag - 1) >> (j - 3)) & 1
                else:  # S_RAW: up to 8 equiprobable bits in one step
                    modelled = False
                    slot = 0
                    step = min(left, 8)
                    left -= step
                    bit = ((mag - 1) >> left) & ((1 << step) - 1)

                # The coding step, the same statements in both directions.
                if modelled:
                    pf = np.int64(prob[r, slot, 0])
                    ps = np.int64(prob[r, slot, 1])
                    p1 = min(max((pf + ps) >> (1 + _EST_SHIFT), _PROB_MIN), _PROB_MAX)
                    bound = (rng >> 16) * p1
                    if not encode:
                        bit = np.int64(code < bound)
                        code -= (bit - 1) & bound
                    # Branch-free: the bit is as good as random to the branch predictor.
                    low += (bit - 1) & bound
                    rng = bound + ((bit - 1) & (rng - 2 * bound))
                    c = np.int64(prob[r, slot, 2])
                    target = _EST_ONE if bit else 0
                    prob[r, slot, 0] = pf + ((target - pf) >> (c + 1 if c < _RATE_FAST else _RATE_FAST))
                    prob[r, slot, 1] = ps + ((target - ps) >> (c + 1 if c < _RATE_SLOW else _RATE_SLOW))
                    if c < _RATE_SLOW:
                        prob[r, slot, 2] = c + 1
                else:
                    rng >>= step
                    if encode:
                        low += bit * rng
                    else:
                        bit = min(code // rng, (1 << step) - 1)  # the bound only matters when corrupt
                        code -= bit * rng
                while rng < _TOP:
                    rng = (rng << 8) & _MASK32
                    if encode:
                        # Byte output with carry propagation; past `end` only the count goes on.
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
                    else:
                        byte = np.int64(buf[pos]) if pos < end else np.int64(0)
                        pos += 1
                        code = ((code << 8) | byte) & _MASK32

                # The next stage, from the bit just coded.
                ladder_done = False
                if stage == S_TWO1:
                    if bit:
                        value = w
                        hit = True
                        stage = S_DONE
                    else:
                        stage = S_TWO2 if other != w else S_PRED
                elif stage == S_TWO2:
                    if bit:
                        value = other
                        hit = True
                        stage = S_DONE
                    else:
                        stage = S_PRED
                elif stage == S_ZERO:
                    if bit:
                        mag = 0
                        stage = S_DONE
                    else:
                        stage = S_SIGN
                elif stage == S_SIGN:
                    neg = bit
                    stage = S_START if j > 0 else S_UP
                elif stage == S_START:
                    if bit:
                        stage = S_UP
                    else:
                        j -= 1
                        if j > 0:
                            stage = S_DOWN
                        else:
                            ladder_done = True
                elif stage == S_UP:
                    if bit:
                        j += 1
                        ladder_done = j >= N_BUCKETS - 1
                    else:
                        ladder_done = True
                elif stage == S_DOWN:
                    if bit:
                        j -= 1
                        ladder_done = j == 0
                    else:
                        ladder_done = True
                elif stage == S_M1:
                    mant = (mant << 1) | bit
                    if j > 2:
                        stage = S_M2
                    else:
                        mag = mant + 1
                        stage = S_DONE
                elif stage == S_M2:
                    mant = (mant << 1) | bit
                    left = j - 3
                    if left > 0:
                        stage = S_RAW
                    else:
                        mag = mant + 1
                        stage = S_DONE
                else:
                    mant = (mant << step) | bit
                    if left == 0:
                        mag = mant + 1
                        stage = S_DONE
                if ladder_done:
                    if j < 2:
                        mag = j + 1
                        stage = S_DONE
                    else:
                        mant = np.int64(1)
                        stage = S_M1

            if hit:
                if not encode or allow > 0:
                    img[y, x] = value
                res[cur, xi] = (value - w) << 3
                lerr[cur, xi] = abs(value - w) << 3
                continue
            if not encode or allow > 0:
                value = pred + (-mag if neg else mag) * qstep
                # A tolerant pixel may land up to `allow` beyond the range and is clamped back (which
                # only brings it closer to the original); anything further is corruption.
                if value < -allow or value > maxval + allow:
                    status = STATUS_CORRUPT
                    break
                value = min(max(value, 0), maxval)
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
                bs = bias_sum[bctx]
                bias_sum[bctx] = bs >> 1 if bs >= 0 else -((-bs) >> 1)
        if status != STATUS_OK or pos > end:
            break

    if encode:
        # Flush: five more byte outputs, as above.
        for _ in range(5):
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
        if pos > end:
            status = STATUS_OVERFLOW
    return status, pos

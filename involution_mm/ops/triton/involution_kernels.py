"""The fused involution layer's Triton kernels: kernel generation and aggregation in one pass.

Notation: ``x`` is ``(B, C, H, W)``, the reduced features ``r`` are ``(B, R, Ho, Wo)`` (the output's size), the
span weight ``w`` is ``(G * KK, R)`` and its bias ``(G * KK,)`` with ``KK = K * K``; group ``g`` owns the
``GC = C / G`` channels ``g * GC + c``. The generated kernel of tap ``t = i * K + j`` at output position ``p``
is ``wk[p, g, t] = r[p, :] . w[g * KK + t, :] + bias[g * KK + t]`` and

    out[p, g, c] = sum_t wk[p, g, t] * x[tap_t(p), g, c],   tap_t(h, w) = (h * S - PAD + i * D, w * S - PAD + j * D)

with zeros outside ``x``. A program takes a tile of ``BLOCK_H x BLOCK_W`` positions of one sample and
``BLOCK_G`` groups, and loops over the taps. For each tap it generates the tile's kernels of that tap for all
its groups at once, ``wk_t[BLOCK_G, P] = w_t[BLOCK_G, R] @ r[R, P] + b_t`` (``tl.dot``: tensor cores, fp32
accumulation), and multiplies them into the shifted ``[BLOCK_G, P, GC]`` tile of the input: a group's kernel
broadcasts over its channels, so no per-tap column of a matrix has to be picked out of registers. Neither the
``(B, G * KK, Ho, Wo)`` kernel tensor nor any part of it is written to memory. Sums are float32 (float64 for
float64 inputs); the matrix product of float32 inputs uses TF32 when ``PRECISION`` says so.

Tiles hold the groups' channels innermost, so in channels_last a thread loads 16-byte vectors of adjacent
channels; the launcher (``involution_fused.py``) passes every stride, so any layout works, and Triton
specialises unit strides at launch.
"""
import triton
import triton.language as tl


@triton.jit
def _positions(tile, height, width, BLOCK_H: tl.constexpr, BLOCK_W: tl.constexpr):
    """Sample, rows, columns and in-bounds mask of tile number ``tile`` over ``(B, height, width)`` maps."""
    tiles_w = tl.cdiv(width, BLOCK_W)
    tiles = tl.cdiv(height, BLOCK_H) * tiles_w
    b = tile // tiles
    rem = tile - b * tiles
    p = tl.arange(0, BLOCK_H * BLOCK_W)
    rows = (rem // tiles_w) * BLOCK_H + p // BLOCK_W
    cols = (rem % tiles_w) * BLOCK_W + p % BLOCK_W
    return b, rows, cols, (rows < height) & (cols < width)


@triton.jit
def _groups(G, GC: tl.constexpr, BLOCK_G: tl.constexpr, BLOCK_C: tl.constexpr, EVEN_G: tl.constexpr):
    """This program's groups, their channels ``[BLOCK_G, BLOCK_C]`` and the masks of both."""
    g = tl.program_id(1) * BLOCK_G + tl.arange(0, BLOCK_G)
    g_ok = (g < G) | EVEN_G
    c = tl.arange(0, BLOCK_C)
    return g, g_ok, g[:, None] * GC + c[None, :], g_ok[:, None] & ((c[None, :] < GC) | (GC == BLOCK_C))


@triton.jit
def _generate(r_t, w_ptr, b_ptr, tap, g, g_ok, sw_o, sw_r, R: tl.constexpr, BLOCK_R: tl.constexpr,
              KK: tl.constexpr, PRECISION: tl.constexpr, ACC: tl.constexpr, DOT_FP32: tl.constexpr):
    """The kernels of tap ``tap`` for groups ``g`` at the positions of ``r_t`` (``[BLOCK_R, P]``):
    ``[BLOCK_G, P]``, in ``ACC``. ``DOT_FP32`` multiplies in float32 (Triton 3.7's interpreter multiplies
    bfloat16 operands as raw integers; the launcher sets it for bfloat16 there only)."""
    rows = g * KK + tap
    k = tl.arange(0, BLOCK_R)
    w_t = tl.load(w_ptr + rows[:, None] * sw_o + k[None, :] * sw_r,
                  mask=g_ok[:, None] & ((k[None, :] < R) | (R == BLOCK_R)), other=0.0)
    bias = tl.load(b_ptr + rows, mask=g_ok, other=0.0).to(ACC)
    if DOT_FP32:
        w_t = w_t.to(tl.float32)
        r_t = r_t.to(tl.float32)
    return tl.dot(w_t, r_t, tl.zeros([w_t.shape[0], r_t.shape[1]], ACC) + bias[:, None],
                  input_precision=PRECISION, out_dtype=ACC)


@triton.jit
def _load_r(r_ptr, b64, rows, cols, ok, sr_b, sr_c, sr_h, sr_w, R: tl.constexpr, BLOCK_R: tl.constexpr):
    """``r`` at the given positions as ``[BLOCK_R, P]`` (zeros where ``ok`` is false or beyond ``R``)."""
    k = tl.arange(0, BLOCK_R)
    return tl.load(r_ptr + b64 * sr_b + k[:, None] * sr_c + (rows * sr_h + cols * sr_w)[None, :],
                   mask=ok[None, :] & ((k[:, None] < R) | (R == BLOCK_R)), other=0.0)


@triton.jit
def _input_row(ih0, iw0, i, p_ok, in_h, sx_h, sx_w, DIL: tl.constexpr):
    """Offset of kernel row ``i``'s first tap in the input for each position, and whether the row lies inside
    the map there."""
    ih = ih0 + i * DIL
    return ih * sx_h + iw0 * sx_w, p_ok & (ih.to(tl.uint32) < in_h)  # one unsigned compare tests both bounds


@triton.jit
def _input_tap(x_base, row, row_ok, iw0, j, ch_ok, in_w, sx_w, DIL: tl.constexpr):
    """The tile's inputs ``[BLOCK_G, P, BLOCK_C]`` at tap ``j`` of a kernel row (zeros outside the map)."""
    ok = row_ok & ((iw0 + j * DIL).to(tl.uint32) < in_w)
    return tl.load(x_base + (row + j * DIL * sx_w)[None, :, None], mask=ok[None, :, None] & ch_ok[:, None, :],
                   other=0.0)


@triton.jit
def fused_forward_kernel(x_ptr, r_ptr, w_ptr, b_ptr, out_ptr, in_h, in_w, out_h, out_w, G,
                         sx_b, sx_c, sx_h, sx_w, sr_b, sr_c, sr_h, sr_w, so_b, so_c, so_h, so_w, sw_o, sw_r,
                         K: tl.constexpr, STRIDE: tl.constexpr, PAD: tl.constexpr, DIL: tl.constexpr,
                         R: tl.constexpr, GC: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr,
                         BLOCK_H: tl.constexpr, BLOCK_W: tl.constexpr, BLOCK_G: tl.constexpr,
                         EVEN_G: tl.constexpr, PRECISION: tl.constexpr, ACC: tl.constexpr, DOT_FP32: tl.constexpr):
    """``out`` for one tile of output positions and ``BLOCK_G`` groups; grid ``(B * tiles, cdiv(G, BLOCK_G))``.

    ``r`` is read once per program and stays on chip for all taps."""
    b, oh, ow, p_ok = _positions(tl.program_id(0), out_h, out_w, BLOCK_H, BLOCK_W)
    g, g_ok, ch, ch_ok = _groups(G, GC, BLOCK_G, BLOCK_C, EVEN_G)
    b64 = b.to(tl.int64)
    r_tile = _load_r(r_ptr, b64, oh, ow, p_ok, sr_b, sr_c, sr_h, sr_w, R, BLOCK_R)
    x_base = x_ptr + b64 * sx_b + (ch * sx_c)[:, None, :]
    ih0 = oh * STRIDE - PAD
    iw0 = ow * STRIDE - PAD
    acc = tl.zeros([BLOCK_G, BLOCK_H * BLOCK_W, BLOCK_C], ACC)
    for i in range(K):
        row, row_ok = _input_row(ih0, iw0, i, p_ok, in_h, sx_h, sx_w, DIL)
        for j in range(K):
            wk = _generate(r_tile, w_ptr, b_ptr, i * K + j, g, g_ok, sw_o, sw_r, R, BLOCK_R, K * K, PRECISION,
                           ACC, DOT_FP32)
            xv = _input_tap(x_base, row, row_ok, iw0, j, ch_ok, in_w, sx_w, DIL)
            acc += wk[:, :, None] * xv.to(ACC)
    out = out_ptr + b64 * so_b + (ch * so_c)[:, None, :] + (oh * so_h + ow * so_w)[None, :, None]
    tl.store(out, acc.to(out_ptr.dtype.element_ty), mask=p_ok[None, :, None] & ch_ok[:, None, :])


@triton.jit
def grad_kernels_kernel(go_ptr, x_ptr, gk_ptr, in_h, in_w, out_h, out_w, G, positions,
                        sg_b, sg_c, sg_h, sg_w, sx_b, sx_c, sx_h, sx_w,
                        K: tl.constexpr, STRIDE: tl.constexpr, PAD: tl.constexpr, DIL: tl.constexpr,
                        GC: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_W: tl.constexpr,
                        BLOCK_G: tl.constexpr, EVEN_G: tl.constexpr, ACC: tl.constexpr):
    """The gradient of the generated kernels, ``gk[g * KK + t, n] = sum_c grad_out[n, g, c] * x[tap_t(n), g, c]``
    (``n`` the flat output position). Same grid as the forward kernel.

    The tile's ``grad_out`` is read once and stays on chip for all taps. (Summing ``gk`` over the tile here
    for the bias gradient would cost a third of the loop's instructions in cross-warp reductions; the
    launcher gets it from the weight gradient's matrix product instead.)"""
    b, oh, ow, p_ok = _positions(tl.program_id(0), out_h, out_w, BLOCK_H, BLOCK_W)
    g, g_ok, ch, ch_ok = _groups(G, GC, BLOCK_G, BLOCK_C, EVEN_G)
    b64 = b.to(tl.int64)
    go = tl.load(go_ptr + b64 * sg_b + (ch * sg_c)[:, None, :] + (oh * sg_h + ow * sg_w)[None, :, None],
                 mask=p_ok[None, :, None] & ch_ok[:, None, :], other=0.0).to(ACC)
    x_base = x_ptr + b64 * sx_b + (ch * sx_c)[:, None, :]
    KK: tl.constexpr = K * K
    n = (b64 * out_h + oh) * out_w + ow
    gk_tile = gk_ptr + (g * KK).to(tl.int64)[:, None] * positions + n[None, :]
    ih0 = oh * STRIDE - PAD
    iw0 = ow * STRIDE - PAD
    for i in range(K):
        row, row_ok = _input_row(ih0, iw0, i, p_ok, in_h, sx_h, sx_w, DIL)
        for j in range(K):
            xv = _input_tap(x_base, row, row_ok, iw0, j, ch_ok, in_w, sx_w, DIL)
            gk = tl.sum(go * xv.to(ACC), axis=2)
            tl.store(gk_tile, gk.to(gk_ptr.dtype.element_ty), mask=g_ok[:, None] & p_ok[None, :])
            # the next tap's row: a pointer step, never (i * K + j) * positions in 32 bits, which passes 2**31
            # from 44.7 M positions at K = 7
            gk_tile += positions


@triton.jit
def grad_input_kernel(go_ptr, r_ptr, w_ptr, b_ptr, gx_ptr, in_h, in_w, out_h, out_w, G,
                      sg_b, sg_c, sg_h, sg_w, sr_b, sr_c, sr_h, sr_w, sx_b, sx_c, sx_h, sx_w, sw_o, sw_r,
                      K: tl.constexpr, STRIDE: tl.constexpr, PAD: tl.constexpr, DIL: tl.constexpr,
                      R: tl.constexpr, GC: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr,
                      BLOCK_H: tl.constexpr, BLOCK_W: tl.constexpr, BLOCK_G: tl.constexpr,
                      EVEN_G: tl.constexpr, PRECISION: tl.constexpr, ACC: tl.constexpr, DOT_FP32: tl.constexpr):
    """``grad_x[q, g, c] = sum_t wk[p, g, t] * grad_out[p, g, c]`` over the taps ``t`` that read input position
    ``q`` from output position ``p = (q + PAD - t * DIL) / STRIDE``, with the kernels ``wk[p]`` generated again
    from ``r[p]`` (nothing was stored by the forward pass).

    A program takes input positions of one residue class ``q = a + STRIDE * k`` (per axis), so whether a tap
    reaches an output position at all is the same for the whole tile and taps that never do are skipped.
    Grid ``(B * STRIDE**2 * tiles of a class, cdiv(G, BLOCK_G))``."""
    tile = tl.program_id(0)
    class_h = tl.cdiv(in_h, STRIDE)
    class_w = tl.cdiv(in_w, STRIDE)
    per_class = tl.cdiv(class_h, BLOCK_H) * tl.cdiv(class_w, BLOCK_W)
    residue = tile // per_class  # b * STRIDE**2 + a_h * STRIDE + a_w
    b = residue // (STRIDE * STRIDE)
    a_h = (residue // STRIDE) % STRIDE
    a_w = residue % STRIDE
    _, kh, kw, _ = _positions(tile % per_class, class_h, class_w, BLOCK_H, BLOCK_W)
    qh = a_h + kh * STRIDE
    qw = a_w + kw * STRIDE
    q_ok = (qh < in_h) & (qw < in_w)
    g, g_ok, ch, ch_ok = _groups(G, GC, BLOCK_G, BLOCK_C, EVEN_G)
    b64 = b.to(tl.int64)
    go_base = go_ptr + b64 * sg_b + (ch * sg_c)[:, None, :]
    acc = tl.zeros([BLOCK_G, BLOCK_H * BLOCK_W, BLOCK_C], ACC)
    for i in range(K):
        dh = a_h + PAD - i * DIL
        if dh % STRIDE == 0:  # this kernel row reaches output rows from this residue class
            oh = dh // STRIDE + kh  # exact: dh is a multiple of STRIDE
            row_ok = q_ok & (oh.to(tl.uint32) < out_h)
            for j in range(K):
                dw = a_w + PAD - j * DIL
                if dw % STRIDE == 0:
                    ow = dw // STRIDE + kw
                    ok = row_ok & (ow.to(tl.uint32) < out_w)
                    r_t = _load_r(r_ptr, b64, oh, ow, ok, sr_b, sr_c, sr_h, sr_w, R, BLOCK_R)
                    wk = _generate(r_t, w_ptr, b_ptr, i * K + j, g, g_ok, sw_o, sw_r, R, BLOCK_R, K * K, PRECISION,
                                   ACC, DOT_FP32)
                    gv = tl.load(go_base + (oh * sg_h + ow * sg_w)[None, :, None],
                                 mask=ok[None, :, None] & ch_ok[:, None, :], other=0.0)
                    acc += wk[:, :, None] * gv.to(ACC)
    gx = gx_ptr + b64 * sx_b + (ch * sx_c)[:, None, :] + (qh * sx_h + qw * sx_w)[None, :, None]
    tl.store(gx, acc.to(gx_ptr.dtype.element_ty), mask=q_ok[None, :, None] & ch_ok[:, None, :])

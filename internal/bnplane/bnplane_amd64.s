//go:build amd64 && !purego

#include "textflag.h"

// tailMask: loading 8 lanes from tailMask+4*(8-r) gives a mask of r ones.
DATA tailMask<>+0(SB)/4, $0xffffffff
DATA tailMask<>+4(SB)/4, $0xffffffff
DATA tailMask<>+8(SB)/4, $0xffffffff
DATA tailMask<>+12(SB)/4, $0xffffffff
DATA tailMask<>+16(SB)/4, $0xffffffff
DATA tailMask<>+20(SB)/4, $0xffffffff
DATA tailMask<>+24(SB)/4, $0xffffffff
DATA tailMask<>+28(SB)/4, $0xffffffff
DATA tailMask<>+32(SB)/4, $0
DATA tailMask<>+36(SB)/4, $0
DATA tailMask<>+40(SB)/4, $0
DATA tailMask<>+44(SB)/4, $0
DATA tailMask<>+48(SB)/4, $0
DATA tailMask<>+52(SB)/4, $0
DATA tailMask<>+56(SB)/4, $0
DATA tailMask<>+60(SB)/4, $0
GLOBL tailMask<>(SB), RODATA|NOPTR, $64

// LOADMASK sets Y15 to the mask of the last CX%8 lanes of a row (clobbers
// AX, R12, R13).
#define LOADMASK \
	MOVQ    CX, AX              \
	ANDQ    $7, AX              \
	MOVQ    $8, R12             \
	SUBQ    AX, R12             \
	LEAQ    tailMask<>(SB), R13 \
	VMOVUPS (R13)(R12*4), Y15

// ROWSUM adds the 8 float32 lanes of Y(f) to the float64 lanes of
// Y(lo) (lanes 0-3) and Y(hi) (lanes 4-7), through X4/Y4 and X5/Y5:
// rows are summed in float64 so long grids keep their precision.
#define ROWSUM(f, xf, lo, hi) \
	VCVTPS2PD    xf, Y4   \
	VEXTRACTF128 $1, f, X5 \
	VCVTPS2PD    X5, Y5   \
	VADDPD       Y4, lo, lo \
	VADDPD       Y5, hi, hi

// HSUM sums the float64 lanes of Y(lo) and Y(hi) in a fixed order into
// the low lane of X(xlo).
#define HSUM(lo, xlo, hi) \
	VADDPD       hi, lo, lo \
	VEXTRACTF128 $1, lo, X4 \
	VADDPD       X4, xlo, xlo \
	VHADDPD      xlo, xlo, xlo

// func sumsAboutAVX2(x []float32, stride, rows, width int, shift float32) (s, q float64)
//
// Per row: blocks of 16 into two pairs of float32 accumulators (Y0/Y2 and
// Y1/Y3: sum and sum of squares), a block of 8, a masked tail; then the row's
// lanes go to float64 accumulators Y8/Y9 (sum) and Y10/Y11 (squares).
//
// Registers: SI x row, R9 stride in bytes, R11 rows left, CX width,
// BX column, Y14 shift, Y15 tail mask.
TEXT ·sumsAboutAVX2(SB), NOSPLIT, $0-72
	MOVQ         x_base+0(FP), SI
	MOVQ         stride+24(FP), R9
	SHLQ         $2, R9
	MOVQ         rows+32(FP), R11
	MOVQ         width+40(FP), CX
	VBROADCASTSS shift+48(FP), Y14
	LOADMASK
	VXORPD       Y8, Y8, Y8
	VXORPD       Y9, Y9, Y9
	VXORPD       Y10, Y10, Y10
	VXORPD       Y11, Y11, Y11

srow:
	VXORPS Y0, Y0, Y0
	VXORPS Y1, Y1, Y1
	VXORPS Y2, Y2, Y2
	VXORPS Y3, Y3, Y3
	XORQ   BX, BX

s16:
	LEAQ        16(BX), AX
	CMPQ        AX, CX
	JGT         s8
	VMOVUPS     (SI)(BX*4), Y4
	VMOVUPS     32(SI)(BX*4), Y5
	VSUBPS      Y14, Y4, Y4
	VSUBPS      Y14, Y5, Y5
	VADDPS      Y4, Y0, Y0
	VFMADD231PS Y4, Y4, Y2
	VADDPS      Y5, Y1, Y1
	VFMADD231PS Y5, Y5, Y3
	MOVQ        AX, BX
	JMP         s16

s8:
	LEAQ        8(BX), AX
	CMPQ        AX, CX
	JGT         smask
	VMOVUPS     (SI)(BX*4), Y4
	VSUBPS      Y14, Y4, Y4
	VADDPS      Y4, Y0, Y0
	VFMADD231PS Y4, Y4, Y2
	MOVQ        AX, BX

smask:
	CMPQ        BX, CX
	JGE         srowend
	VMASKMOVPS  (SI)(BX*4), Y15, Y4
	VSUBPS      Y14, Y4, Y4
	VANDPS      Y15, Y4, Y4 // the lanes past the row held 0-shift
	VADDPS      Y4, Y1, Y1
	VFMADD231PS Y4, Y4, Y3

srowend:
	VADDPS Y1, Y0, Y0
	VADDPS Y3, Y2, Y2
	ROWSUM(Y0, X0, Y8, Y9)
	ROWSUM(Y2, X2, Y10, Y11)
	ADDQ   R9, SI
	DECQ   R11
	JNZ    srow

	HSUM(Y8, X8, Y9)
	HSUM(Y10, X10, Y11)
	VMOVSD X8, s+56(FP)
	VMOVSD X10, q+64(FP)
	VZEROUPPER
	RET

// AFFINE8 computes 8 outputs into Y0 from x in Y(xv) (and add in Y(av)
// when R8 is set), applying the ReLU when R10 is set. Labels are passed in
// because a macro's labels would clash between its uses.
#define AFFINE8(xv, av, skipadd, skiprelu) \
	VMOVUPS     Y13, Y0  \
	VFMADD231PS xv, Y12, Y0 \
	TESTQ       R8, R8   \
	JZ          skipadd  \
	VADDPS      av, Y0, Y0 \
skipadd: \
	TESTQ       R10, R10 \
	JZ          skiprelu \
	VMAXPS      Y0, Y14, Y0 \
	VADDPS      Y14, Y0, Y0 \
skiprelu:

// func affineAVX2(y, x, add []float32, stride, rows, width int, scale, shift float32, useAdd, relu bool)
//
// y = x*scale + shift (one rounding: a fused multiply-add), + add, then
// the ReLU as max(0, t) + 0: VMAXPS returns its second operand for a NaN
// (kept, as Go's max keeps it) and adding +0 turns -0 into +0 (as Go's
// max(-0, 0) gives).
//
// Registers: DI y row, SI x row, DX add row, R8 useAdd, R10 relu, R9 stride
// in bytes, R11 rows left, CX width, BX column, Y12 scale, Y13 shift, Y14
// zero, Y15 tail mask.
TEXT ·affineAVX2(SB), NOSPLIT, $0-106
	MOVQ         y_base+0(FP), DI
	MOVQ         x_base+24(FP), SI
	MOVQ         add_base+48(FP), DX
	MOVQ         stride+72(FP), R9
	SHLQ         $2, R9
	MOVQ         rows+80(FP), R11
	MOVQ         width+88(FP), CX
	VBROADCASTSS scale+96(FP), Y12
	VBROADCASTSS shift+100(FP), Y13
	MOVBQZX      useAdd+104(FP), R8
	MOVBQZX      relu+105(FP), R10
	VXORPS       Y14, Y14, Y14
	LOADMASK

arow:
	XORQ BX, BX

a8:
	LEAQ    8(BX), AX
	CMPQ    AX, CX
	JGT     amask
	VMOVUPS (SI)(BX*4), Y1
	TESTQ   R8, R8
	JZ      a8x
	VMOVUPS (DX)(BX*4), Y2

a8x:
	AFFINE8(Y1, Y2, a8add, a8relu)
	VMOVUPS Y0, (DI)(BX*4)
	MOVQ    AX, BX
	JMP     a8

amask:
	CMPQ       BX, CX
	JGE        arowend
	VMASKMOVPS (SI)(BX*4), Y15, Y1
	TESTQ      R8, R8
	JZ         amx
	VMASKMOVPS (DX)(BX*4), Y15, Y2

amx:
	AFFINE8(Y1, Y2, amadd, amrelu)
	VMASKMOVPS Y0, Y15, (DI)(BX*4)

arowend:
	ADDQ R9, DI
	ADDQ R9, SI
	ADDQ R9, DX
	DECQ R11
	JNZ  arow
	VZEROUPPER
	RET

// GRAD8 masks the dy in Y4 by mask > 0 (the mask row at DX) when R8 is set.
#define GRAD8(mem, done) \
	TESTQ  R8, R8 \
	JZ     done   \
	VCMPPS $0x11, mem, Y14, Y6 \
	VANDPS Y6, Y4, Y4 \
done:

// func dySumsAVX2(dy, mask, x []float32, stride, rows, width int, mean float32, useMask bool) (s, sx float64)
//
// Like sumsAboutAVX2: per row, blocks of 16 into Y0/Y2 and Y1/Y3 (sum of
// the gradient and of gradient*(x-mean)), a block of 8, a masked tail; rows
// summed in float64 (Y8/Y9 and Y10/Y11). The ReLU mask is 0 < mask (false
// for NaN), then an AND of the bits, as in Go.
//
// Registers: DI dy row, DX mask row, SI x row, R8 useMask, R9 stride in
// bytes, R11 rows left, CX width, BX column, Y13 mean, Y14 zero, Y15 tail
// mask.
TEXT ·dySumsAVX2(SB), NOSPLIT, $0-120
	MOVQ         dy_base+0(FP), DI
	MOVQ         mask_base+24(FP), DX
	MOVQ         x_base+48(FP), SI
	MOVQ         stride+72(FP), R9
	SHLQ         $2, R9
	MOVQ         rows+80(FP), R11
	MOVQ         width+88(FP), CX
	VBROADCASTSS mean+96(FP), Y13
	MOVBQZX      useMask+100(FP), R8
	VXORPS       Y14, Y14, Y14
	LOADMASK
	VXORPD       Y8, Y8, Y8
	VXORPD       Y9, Y9, Y9
	VXORPD       Y10, Y10, Y10
	VXORPD       Y11, Y11, Y11

drow:
	VXORPS Y0, Y0, Y0
	VXORPS Y1, Y1, Y1
	VXORPS Y2, Y2, Y2
	VXORPS Y3, Y3, Y3
	XORQ   BX, BX

d16:
	LEAQ    16(BX), AX
	CMPQ    AX, CX
	JGT     d8
	VMOVUPS (DI)(BX*4), Y4
	GRAD8((DX)(BX*4), d16m0)
	VMOVUPS (SI)(BX*4), Y5
	VSUBPS  Y13, Y5, Y5
	VADDPS  Y4, Y0, Y0
	VFMADD231PS Y5, Y4, Y2
	VMOVUPS 32(DI)(BX*4), Y4
	GRAD8(32(DX)(BX*4), d16m1)
	VMOVUPS 32(SI)(BX*4), Y5
	VSUBPS  Y13, Y5, Y5
	VADDPS  Y4, Y1, Y1
	VFMADD231PS Y5, Y4, Y3
	MOVQ    AX, BX
	JMP     d16

d8:
	LEAQ    8(BX), AX
	CMPQ    AX, CX
	JGT     dmask
	VMOVUPS (DI)(BX*4), Y4
	GRAD8((DX)(BX*4), d8m)
	VMOVUPS (SI)(BX*4), Y5
	VSUBPS  Y13, Y5, Y5
	VADDPS  Y4, Y0, Y0
	VFMADD231PS Y5, Y4, Y2
	MOVQ    AX, BX

dmask:
	CMPQ       BX, CX
	JGE        drowend
	VMASKMOVPS (DI)(BX*4), Y15, Y4 // 0 past the row: adds nothing
	TESTQ      R8, R8
	JZ         dmaskx
	VMASKMOVPS (DX)(BX*4), Y15, Y7
	VCMPPS     $0x11, Y7, Y14, Y6
	VANDPS     Y6, Y4, Y4

dmaskx:
	VMASKMOVPS  (SI)(BX*4), Y15, Y5
	VSUBPS      Y13, Y5, Y5
	VADDPS      Y4, Y1, Y1
	VFMADD231PS Y5, Y4, Y3

drowend:
	VADDPS Y1, Y0, Y0
	VADDPS Y3, Y2, Y2
	ROWSUM(Y0, X0, Y8, Y9)
	ROWSUM(Y2, X2, Y10, Y11)
	ADDQ   R9, DI
	ADDQ   R9, DX
	ADDQ   R9, SI
	DECQ   R11
	JNZ    drow

	HSUM(Y8, X8, Y9)
	HSUM(Y10, X10, Y11)
	VMOVSD X8, s+104(FP)
	VMOVSD X10, sx+112(FP)
	VZEROUPPER
	RET

// IGRAD8 turns the gradient in Y4 and x in Y5 into k*g - a - b*(x-mean) in Y4.
#define IGRAD8 \
	VSUBPS       Y13, Y5, Y5 \
	VMULPS       Y10, Y4, Y4 \
	VSUBPS       Y11, Y4, Y4 \
	VFNMADD231PS Y5, Y12, Y4

// func inputGradAVX2(dx, dy, mask, x []float32, stride, rows, width int, k, a, b, mean float32, useMask, assign bool)
//
// Registers: DI dx row, R10 dy row, DX mask row, SI x row, R8 useMask, R12
// assign, R9 stride in bytes, R11 rows left, CX width, BX column, Y10 k,
// Y11 a, Y12 b, Y13 mean, Y14 zero, Y15 tail mask.
TEXT ·inputGradAVX2(SB), NOSPLIT, $0-138
	MOVQ         width+112(FP), CX
	LOADMASK
	MOVQ         dx_base+0(FP), DI
	MOVQ         dy_base+24(FP), R10
	MOVQ         mask_base+48(FP), DX
	MOVQ         x_base+72(FP), SI
	MOVQ         stride+96(FP), R9
	SHLQ         $2, R9
	MOVQ         rows+104(FP), R11
	VBROADCASTSS k+120(FP), Y10
	VBROADCASTSS a+124(FP), Y11
	VBROADCASTSS b+128(FP), Y12
	VBROADCASTSS mean+132(FP), Y13
	MOVBQZX      useMask+136(FP), R8
	MOVBQZX      assign+137(FP), R12
	VXORPS       Y14, Y14, Y14

grow:
	XORQ BX, BX

g8:
	LEAQ    8(BX), AX
	CMPQ    AX, CX
	JGT     gmask
	VMOVUPS (R10)(BX*4), Y4
	GRAD8((DX)(BX*4), g8m)
	VMOVUPS (SI)(BX*4), Y5
	IGRAD8
	TESTQ   R12, R12
	JNZ     g8store
	VADDPS  (DI)(BX*4), Y4, Y4

g8store:
	VMOVUPS Y4, (DI)(BX*4)
	MOVQ    AX, BX
	JMP     g8

gmask:
	CMPQ       BX, CX
	JGE        growend
	VMASKMOVPS (R10)(BX*4), Y15, Y4
	TESTQ      R8, R8
	JZ         gmaskx
	VMASKMOVPS (DX)(BX*4), Y15, Y7
	VCMPPS     $0x11, Y7, Y14, Y6
	VANDPS     Y6, Y4, Y4

gmaskx:
	VMASKMOVPS (SI)(BX*4), Y15, Y5
	IGRAD8
	TESTQ      R12, R12
	JNZ        gmstore
	VMASKMOVPS (DI)(BX*4), Y15, Y6
	VADDPS     Y6, Y4, Y4

gmstore:
	VMASKMOVPS Y4, Y15, (DI)(BX*4)

growend:
	ADDQ R9, DI
	ADDQ R9, R10
	ADDQ R9, DX
	ADDQ R9, SI
	DECQ R11
	JNZ  grow
	VZEROUPPER
	RET

// func addToAVX2(dst, src []float32, stride, rows, width int, assign bool)
//
// Registers: DI dst row, SI src row, R8 assign, R9 stride in bytes, R11
// rows left, CX width, BX column, Y15 tail mask.
TEXT ·addToAVX2(SB), NOSPLIT, $0-73
	MOVQ    width+64(FP), CX
	LOADMASK
	MOVQ    dst_base+0(FP), DI
	MOVQ    src_base+24(FP), SI
	MOVQ    stride+48(FP), R9
	SHLQ    $2, R9
	MOVQ    rows+56(FP), R11
	MOVBQZX assign+72(FP), R8

trow:
	XORQ BX, BX

t8:
	LEAQ    8(BX), AX
	CMPQ    AX, CX
	JGT     tmask
	VMOVUPS (SI)(BX*4), Y0
	TESTQ   R8, R8
	JNZ     t8store
	VADDPS  (DI)(BX*4), Y0, Y0

t8store:
	VMOVUPS Y0, (DI)(BX*4)
	MOVQ    AX, BX
	JMP     t8

tmask:
	CMPQ       BX, CX
	JGE        trowend
	VMASKMOVPS (SI)(BX*4), Y15, Y0
	TESTQ      R8, R8
	JNZ        tmstore
	VMASKMOVPS (DI)(BX*4), Y15, Y1
	VADDPS     Y1, Y0, Y0

tmstore:
	VMASKMOVPS Y0, Y15, (DI)(BX*4)

trowend:
	ADDQ R9, DI
	ADDQ R9, SI
	DECQ R11
	JNZ  trow
	VZEROUPPER
	RET

//go:build amd64 && !purego

#include "textflag.h"

// func macAVX2(out, src []float32, offs []int, w []float32, acc bool)
//
// For each block of 64 outputs (then of 8), the accumulators stay in
// Y0-Y7 while the loop runs over the taps: one broadcast weight and eight
// fused multiply-adds from src+offs[t] per tap. Eight independent
// accumulators cover the FMA latency.
TEXT ·macAVX2(SB), NOSPLIT, $0-97
	MOVQ    out_base+0(FP), DI
	MOVQ    out_len+8(FP), CX
	MOVQ    src_base+24(FP), SI
	MOVQ    offs_base+48(FP), R8
	MOVQ    offs_len+56(FP), R10
	MOVQ    w_base+72(FP), R9
	MOVBLZX acc+96(FP), R11
	XORQ    BX, BX // output index

loop64:
	LEAQ 64(BX), AX
	CMPQ AX, CX
	JGT  loop8
	TESTQ R11, R11
	JZ   zero64
	VMOVUPS (DI)(BX*4), Y0
	VMOVUPS 32(DI)(BX*4), Y1
	VMOVUPS 64(DI)(BX*4), Y2
	VMOVUPS 96(DI)(BX*4), Y3
	VMOVUPS 128(DI)(BX*4), Y4
	VMOVUPS 160(DI)(BX*4), Y5
	VMOVUPS 192(DI)(BX*4), Y6
	VMOVUPS 224(DI)(BX*4), Y7
	JMP  taps64

zero64:
	VXORPS Y0, Y0, Y0
	VXORPS Y1, Y1, Y1
	VXORPS Y2, Y2, Y2
	VXORPS Y3, Y3, Y3
	VXORPS Y4, Y4, Y4
	VXORPS Y5, Y5, Y5
	VXORPS Y6, Y6, Y6
	VXORPS Y7, Y7, Y7

taps64:
	LEAQ (SI)(BX*4), DX // src + i
	XORQ R12, R12       // tap

tap64:
	CMPQ         R12, R10
	JGE          store64
	MOVQ         (R8)(R12*8), R13
	LEAQ         (DX)(R13*4), R13
	VBROADCASTSS (R9)(R12*4), Y8
	VFMADD231PS  (R13), Y8, Y0
	VFMADD231PS  32(R13), Y8, Y1
	VFMADD231PS  64(R13), Y8, Y2
	VFMADD231PS  96(R13), Y8, Y3
	VFMADD231PS  128(R13), Y8, Y4
	VFMADD231PS  160(R13), Y8, Y5
	VFMADD231PS  192(R13), Y8, Y6
	VFMADD231PS  224(R13), Y8, Y7
	INCQ         R12
	JMP          tap64

store64:
	VMOVUPS Y0, (DI)(BX*4)
	VMOVUPS Y1, 32(DI)(BX*4)
	VMOVUPS Y2, 64(DI)(BX*4)
	VMOVUPS Y3, 96(DI)(BX*4)
	VMOVUPS Y4, 128(DI)(BX*4)
	VMOVUPS Y5, 160(DI)(BX*4)
	VMOVUPS Y6, 192(DI)(BX*4)
	VMOVUPS Y7, 224(DI)(BX*4)
	MOVQ    AX, BX
	JMP     loop64

loop8:
	LEAQ  8(BX), AX
	CMPQ  AX, CX
	JGT   done
	VXORPS Y0, Y0, Y0
	VXORPS Y1, Y1, Y1
	TESTQ R11, R11
	JZ    taps8
	VMOVUPS (DI)(BX*4), Y0

taps8:
	LEAQ (SI)(BX*4), DX
	XORQ R12, R12

tap8:
	// Two accumulators (even and odd taps) halve the FMA dependency chain.
	LEAQ         1(R12), R13
	CMPQ         R13, R10
	JGE          last8
	MOVQ         (R8)(R12*8), R13
	VBROADCASTSS (R9)(R12*4), Y8
	VFMADD231PS  (DX)(R13*4), Y8, Y0
	MOVQ         8(R8)(R12*8), R13
	VBROADCASTSS 4(R9)(R12*4), Y9
	VFMADD231PS  (DX)(R13*4), Y9, Y1
	ADDQ         $2, R12
	JMP          tap8

last8:
	CMPQ         R12, R10
	JGE          store8
	MOVQ         (R8)(R12*8), R13
	VBROADCASTSS (R9)(R12*4), Y8
	VFMADD231PS  (DX)(R13*4), Y8, Y0

store8:
	VADDPS  Y1, Y0, Y0
	VMOVUPS Y0, (DI)(BX*4)
	MOVQ    AX, BX
	JMP     loop8

done:
	VZEROUPPER
	RET

// func dotsAVX2(dy, src []float32, offs []int, out []float32)
//
// One dot product per tap: four accumulators over blocks of 32, then one
// over blocks of 8, summed in a fixed order and added to out[t].
TEXT ·dotsAVX2(SB), NOSPLIT, $0-96
	MOVQ dy_base+0(FP), DI
	MOVQ dy_len+8(FP), CX
	MOVQ src_base+24(FP), SI
	MOVQ offs_base+48(FP), R8
	MOVQ offs_len+56(FP), R10
	MOVQ out_base+72(FP), R9
	XORQ R12, R12 // tap

tap:
	CMPQ   R12, R10
	JGE    dotsdone
	MOVQ   (R8)(R12*8), R13
	LEAQ   (SI)(R13*4), DX // src + offs[t]
	VXORPS Y0, Y0, Y0
	VXORPS Y1, Y1, Y1
	VXORPS Y2, Y2, Y2
	VXORPS Y3, Y3, Y3
	XORQ   BX, BX

dot32:
	LEAQ        32(BX), AX
	CMPQ        AX, CX
	JGT         dot8
	VMOVUPS     (DI)(BX*4), Y4
	VMOVUPS     32(DI)(BX*4), Y5
	VMOVUPS     64(DI)(BX*4), Y6
	VMOVUPS     96(DI)(BX*4), Y7
	VFMADD231PS (DX)(BX*4), Y4, Y0
	VFMADD231PS 32(DX)(BX*4), Y5, Y1
	VFMADD231PS 64(DX)(BX*4), Y6, Y2
	VFMADD231PS 96(DX)(BX*4), Y7, Y3
	MOVQ        AX, BX
	JMP         dot32

dot8:
	LEAQ        8(BX), AX
	CMPQ        AX, CX
	JGT         reduce
	VMOVUPS     (DI)(BX*4), Y4
	VFMADD231PS (DX)(BX*4), Y4, Y0
	MOVQ        AX, BX
	JMP         dot8

reduce:
	VADDPS       Y1, Y0, Y0
	VADDPS       Y3, Y2, Y2
	VADDPS       Y2, Y0, Y0
	VEXTRACTF128 $1, Y0, X1
	VADDPS       X1, X0, X0
	VHADDPS      X0, X0, X0
	VHADDPS      X0, X0, X0
	VADDSS       (R9)(R12*4), X0, X0
	VMOVSS       X0, (R9)(R12*4)
	INCQ         R12
	JMP          tap

dotsdone:
	VZEROUPPER
	RET

// func cpuid(leaf, sub uint32) (a, b, c, d uint32)
TEXT ·cpuid(SB), NOSPLIT, $0-24
	MOVL leaf+0(FP), AX
	MOVL sub+4(FP), CX
	CPUID
	MOVL AX, a+8(FP)
	MOVL BX, b+12(FP)
	MOVL CX, c+16(FP)
	MOVL DX, d+20(FP)
	RET

// func xgetbv0() uint32
TEXT ·xgetbv0(SB), NOSPLIT, $0-4
	XORL   CX, CX
	XGETBV
	MOVL   AX, ret+0(FP)
	RET

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

// func macAVX2(out []float32, ostride int, src []float32, sstride, rows, width int, offs []int, w []float32, init float32, acc bool)
//
// Per row, blocks of 32 outputs, then of 8, then a masked block of the
// last width%8. A block's accumulators stay in registers while the loop
// runs over the taps, two taps per iteration into two sets of accumulators
// (Y0-Y3 and Y4-Y7) so that eight independent FMA chains cover the latency.
//
// Registers: DI out row, SI src row, CX width, R8 offs, R9 w, R10 taps,
// R11 rows left, BX column, DX src row + column, R12 tap, Y10 init, Y11 mask.
TEXT ·macAVX2(SB), NOSPLIT, $0-133
	MOVQ         out_base+0(FP), DI
	MOVQ         src_base+32(FP), SI
	MOVQ         rows+64(FP), R11
	MOVQ         width+72(FP), CX
	MOVQ         offs_base+80(FP), R8
	MOVQ         offs_len+88(FP), R10
	MOVQ         w_base+104(FP), R9
	VBROADCASTSS init+128(FP), Y10
	MOVQ         CX, AX
	ANDQ         $7, AX
	MOVQ         $8, R12
	SUBQ         AX, R12
	LEAQ         tailMask<>(SB), R13
	VMOVUPS      (R13)(R12*4), Y11

row:
	TESTQ R11, R11
	JZ    done
	XORQ  BX, BX

blk32:
	LEAQ  32(BX), AX
	CMPQ  AX, CX
	JGT   blk8
	CMPB  acc+132(FP), $0
	JEQ   init32
	VMOVUPS (DI)(BX*4), Y0
	VMOVUPS 32(DI)(BX*4), Y1
	VMOVUPS 64(DI)(BX*4), Y2
	VMOVUPS 96(DI)(BX*4), Y3
	JMP   zero32

init32:
	VMOVUPS Y10, Y0
	VMOVUPS Y10, Y1
	VMOVUPS Y10, Y2
	VMOVUPS Y10, Y3

zero32:
	VXORPS Y4, Y4, Y4
	VXORPS Y5, Y5, Y5
	VXORPS Y6, Y6, Y6
	VXORPS Y7, Y7, Y7
	LEAQ   (SI)(BX*4), DX
	XORQ   R12, R12

tap32:
	LEAQ         1(R12), R13
	CMPQ         R13, R10
	JGE          last32
	MOVQ         (R8)(R12*8), R13
	LEAQ         (DX)(R13*4), R13
	VBROADCASTSS (R9)(R12*4), Y8
	VFMADD231PS  (R13), Y8, Y0
	VFMADD231PS  32(R13), Y8, Y1
	VFMADD231PS  64(R13), Y8, Y2
	VFMADD231PS  96(R13), Y8, Y3
	MOVQ         8(R8)(R12*8), R13
	LEAQ         (DX)(R13*4), R13
	VBROADCASTSS 4(R9)(R12*4), Y9
	VFMADD231PS  (R13), Y9, Y4
	VFMADD231PS  32(R13), Y9, Y5
	VFMADD231PS  64(R13), Y9, Y6
	VFMADD231PS  96(R13), Y9, Y7
	ADDQ         $2, R12
	JMP          tap32

last32:
	CMPQ         R12, R10
	JGE          store32
	MOVQ         (R8)(R12*8), R13
	LEAQ         (DX)(R13*4), R13
	VBROADCASTSS (R9)(R12*4), Y8
	VFMADD231PS  (R13), Y8, Y0
	VFMADD231PS  32(R13), Y8, Y1
	VFMADD231PS  64(R13), Y8, Y2
	VFMADD231PS  96(R13), Y8, Y3

store32:
	VADDPS  Y4, Y0, Y0
	VADDPS  Y5, Y1, Y1
	VADDPS  Y6, Y2, Y2
	VADDPS  Y7, Y3, Y3
	VMOVUPS Y0, (DI)(BX*4)
	VMOVUPS Y1, 32(DI)(BX*4)
	VMOVUPS Y2, 64(DI)(BX*4)
	VMOVUPS Y3, 96(DI)(BX*4)
	MOVQ    AX, BX
	JMP     blk32

blk8:
	LEAQ    8(BX), AX
	CMPQ    AX, CX
	JGT     blkmask
	VMOVUPS Y10, Y0
	CMPB    acc+132(FP), $0
	JEQ     zero8
	VMOVUPS (DI)(BX*4), Y0

zero8:
	VXORPS Y4, Y4, Y4
	LEAQ   (SI)(BX*4), DX
	XORQ   R12, R12

tap8:
	LEAQ         1(R12), R13
	CMPQ         R13, R10
	JGE          last8
	MOVQ         (R8)(R12*8), R13
	VBROADCASTSS (R9)(R12*4), Y8
	VFMADD231PS  (DX)(R13*4), Y8, Y0
	MOVQ         8(R8)(R12*8), R13
	VBROADCASTSS 4(R9)(R12*4), Y9
	VFMADD231PS  (DX)(R13*4), Y9, Y4
	ADDQ         $2, R12
	JMP          tap8

last8:
	CMPQ         R12, R10
	JGE          store8
	MOVQ         (R8)(R12*8), R13
	VBROADCASTSS (R9)(R12*4), Y8
	VFMADD231PS  (DX)(R13*4), Y8, Y0

store8:
	VADDPS  Y4, Y0, Y0
	VMOVUPS Y0, (DI)(BX*4)
	MOVQ    AX, BX
	JMP     blk8

blkmask:
	// The masked loads read nothing past the row, so no tap reads past
	// the source slice that the caller checked.
	CMPQ       BX, CX
	JGE        rowend
	VMOVUPS    Y10, Y0
	CMPB       acc+132(FP), $0
	JEQ        zerom
	VMASKMOVPS (DI)(BX*4), Y11, Y0

zerom:
	VXORPS Y4, Y4, Y4
	LEAQ   (SI)(BX*4), DX
	XORQ   R12, R12

tapm:
	LEAQ         1(R12), R13
	CMPQ         R13, R10
	JGE          lastm
	MOVQ         (R8)(R12*8), R13
	VBROADCASTSS (R9)(R12*4), Y8
	VMASKMOVPS   (DX)(R13*4), Y11, Y12
	VFMADD231PS  Y12, Y8, Y0
	MOVQ         8(R8)(R12*8), R13
	VBROADCASTSS 4(R9)(R12*4), Y9
	VMASKMOVPS   (DX)(R13*4), Y11, Y13
	VFMADD231PS  Y13, Y9, Y4
	ADDQ         $2, R12
	JMP          tapm

lastm:
	CMPQ         R12, R10
	JGE          storem
	MOVQ         (R8)(R12*8), R13
	VBROADCASTSS (R9)(R12*4), Y8
	VMASKMOVPS   (DX)(R13*4), Y11, Y12
	VFMADD231PS  Y12, Y8, Y0

storem:
	VADDPS     Y4, Y0, Y0
	VMASKMOVPS Y0, Y11, (DI)(BX*4)

rowend:
	MOVQ ostride+24(FP), AX
	LEAQ (DI)(AX*4), DI
	MOVQ sstride+56(FP), AX
	LEAQ (SI)(AX*4), SI
	DECQ R11
	JMP  row

done:
	VZEROUPPER
	RET

// func dotsAVX2(dy []float32, dstride int, src []float32, sstride, rows, width int, offs []int, sums []float32)
//
// One tap at a time: over all rows, blocks of 32 into Y0-Y3, blocks of 8
// into Y0, the masked last width%8 into Y1; then a fixed-order horizontal
// sum added to sums[t].
//
// Registers: DI dy row, DX tap source row, CX width, R8 offs, R9 sums,
// R10 taps, R11 rows left, BX column, R12 tap, Y11 mask.
TEXT ·dotsAVX2(SB), NOSPLIT, $0-128
	MOVQ    width+72(FP), CX
	MOVQ    offs_base+80(FP), R8
	MOVQ    offs_len+88(FP), R10
	MOVQ    sums_base+104(FP), R9
	MOVQ    CX, AX
	ANDQ    $7, AX
	MOVQ    $8, R12
	SUBQ    AX, R12
	LEAQ    tailMask<>(SB), R13
	VMOVUPS (R13)(R12*4), Y11
	XORQ    R12, R12

tap:
	CMPQ   R12, R10
	JGE    dotsdone
	MOVQ   dy_base+0(FP), DI
	MOVQ   src_base+32(FP), DX
	MOVQ   (R8)(R12*8), R13
	LEAQ   (DX)(R13*4), DX
	MOVQ   rows+64(FP), R11
	VXORPS Y0, Y0, Y0
	VXORPS Y1, Y1, Y1
	VXORPS Y2, Y2, Y2
	VXORPS Y3, Y3, Y3

drow:
	TESTQ R11, R11
	JZ    reduce
	XORQ  BX, BX

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
	JGT         dotm
	VMOVUPS     (DI)(BX*4), Y4
	VFMADD231PS (DX)(BX*4), Y4, Y0
	MOVQ        AX, BX
	JMP         dot8

dotm:
	CMPQ        BX, CX
	JGE         drowend
	VMASKMOVPS  (DI)(BX*4), Y11, Y4
	VMASKMOVPS  (DX)(BX*4), Y11, Y5
	VFMADD231PS Y5, Y4, Y1

drowend:
	MOVQ dstride+24(FP), AX
	LEAQ (DI)(AX*4), DI
	MOVQ sstride+56(FP), AX
	LEAQ (DX)(AX*4), DX
	DECQ R11
	JMP  drow

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

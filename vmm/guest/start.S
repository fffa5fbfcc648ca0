/* Entered in 64-bit long mode with rsi = boot_params (the VMM's plain-ELF entry). */
  .section .text.start, "ax"
  .globl _start
  .code64
_start:
  lea stack_top(%rip), %rsp
  mov %rsi, %rdi
  call guest_main
1:
  mov $0xfe, %al           /* i8042 pulse reset: the VMM exits */
  out %al, $0x64
  jmp 1b                   /* never hlt: it blocks in the kernel with an in-kernel irqchip */

  .section .bss
  .balign 16
  .space 16384
stack_top:
  .section .note.GNU-stack, "", @progbits

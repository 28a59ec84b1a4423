/* SPDX-License-Identifier: MIT */
/* memport-bench.c: PLACEHOLDER, to be written. */
int main(void) { return 1; }

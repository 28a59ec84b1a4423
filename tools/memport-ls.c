/* SPDX-License-Identifier: MIT */
/* memport-ls.c: PLACEHOLDER, to be written. */
int main(void) { return 1; }

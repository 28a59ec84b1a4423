/* SPDX-License-Identifier: MIT */
/* sem-pass.c: PLACEHOLDER, to be written. */
int main(void) { return 1; }

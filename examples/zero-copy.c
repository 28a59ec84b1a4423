/* SPDX-License-Identifier: MIT */
/* zero-copy.c: PLACEHOLDER, to be written. */
int main(void) { return 1; }

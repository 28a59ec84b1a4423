/* SPDX-License-Identifier: MIT */
/* fork-cow-vs-share.c: PLACEHOLDER, to be written. */
int main(void) { return 1; }

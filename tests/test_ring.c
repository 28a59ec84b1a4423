/* SPDX-License-Identifier: MIT */
/* test_ring.c: PLACEHOLDER, to be written. */
int main(void) { return 77; }

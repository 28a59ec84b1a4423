/* SPDX-License-Identifier: MIT */
/* test_region.c: PLACEHOLDER, to be written. */
int main(void) { return 77; }

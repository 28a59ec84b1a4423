/* SPDX-License-Identifier: MIT */
/* test_inherit.c: PLACEHOLDER, to be written. */
int main(void) { return 77; }

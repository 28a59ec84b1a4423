/* SPDX-License-Identifier: MIT */
/* test_misc.c: PLACEHOLDER, to be written. */
int main(void) { return 77; }

/* SPDX-License-Identifier: MIT */
/* test_name.c: PLACEHOLDER, to be written. */
int main(void) { return 77; }

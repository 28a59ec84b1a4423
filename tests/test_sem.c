/* SPDX-License-Identifier: MIT */
/* test_sem.c: PLACEHOLDER, to be written. */
int main(void) { return 77; }

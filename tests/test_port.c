/* SPDX-License-Identifier: MIT */
/* test_port.c: PLACEHOLDER, to be written. */
int main(void) { return 77; }

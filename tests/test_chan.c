/* SPDX-License-Identifier: MIT */
/* test_chan.c: PLACEHOLDER, to be written. */
int main(void) { return 77; }

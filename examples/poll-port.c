/* SPDX-License-Identifier: MIT */
/* poll-port.c: PLACEHOLDER, to be written. */
int main(void) { return 1; }

/* SPDX-License-Identifier: MIT */
/* producer-consumer.c: PLACEHOLDER, to be written. */
int main(void) { return 1; }

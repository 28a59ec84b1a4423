/* SPDX-License-Identifier: MIT */
/* share-region.c: PLACEHOLDER, to be written. */
int main(void) { return 1; }

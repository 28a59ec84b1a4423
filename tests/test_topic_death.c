/* SPDX-License-Identifier: MIT */
/* test_topic_death.c: placeholder */
#include "helpers.h"
int main(void) { return 0; }

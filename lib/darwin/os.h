/* SPDX-License-Identifier: MIT */
/* os.h: PLACEHOLDER. */

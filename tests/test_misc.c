/* SPDX-License-Identifier: MIT */
/* test_misc.c: error names and texts, version macros against the library, page size, and the
 * NULL handling of the close and query functions. */
#include "config.h"

#include "helpers.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

struct code {
  int value;
  const char *name;
};

#define CODE(x) {MEMPORT_##x, "MEMPORT_" #x}
static const struct code g_codes[] = {
    CODE(EPERM),  CODE(ENOENT),       CODE(EINTR),     CODE(EBADF),  CODE(EAGAIN),   CODE(ENOMEM),
    CODE(EACCES), CODE(EBUSY),        CODE(EEXIST),    CODE(EINVAL), CODE(EMFILE),   CODE(ENOSPC),
    CODE(EPEER),  CODE(ENAMETOOLONG), CODE(EOVERFLOW), CODE(EPROTO), CODE(EMSGSIZE), CODE(ENOTSUP),
    CODE(ETIMEDOUT),
};
#define NCODES (sizeof g_codes / sizeof g_codes[0])

static void test_every_error_code_has_its_name(void **state) {
  (void)state;
  for (size_t i = 0; i < NCODES; i++) {
    assert_true(g_codes[i].value < 0);
    assert_string_equal(memport_err_name(g_codes[i].value), g_codes[i].name);
  }
  assert_string_equal(memport_err_name(0), "0");
}

static void test_every_error_code_has_a_distinct_description(void **state) {
  (void)state;
  const char *unknown = memport_strerror(-99999);
  assert_non_null(unknown);
  for (size_t i = 0; i < NCODES; i++) {
    const char *s = memport_strerror(g_codes[i].value);
    assert_non_null(s);
    assert_true(strlen(s) > 0);
    assert_string_not_equal(s, unknown);
    for (size_t j = 0; j < i; j++) {
      if (g_codes[j].value == g_codes[i].value)
        fail_msg("%s and %s share a value", g_codes[i].name, g_codes[j].name);
      assert_string_not_equal(s, memport_strerror(g_codes[j].value));
    }
  }
  assert_string_not_equal(memport_strerror(0), unknown);
}

static void test_unknown_codes_get_generic_text_never_null(void **state) {
  (void)state;
  const int odd[] = {1, 7, -99999, -EDOM, -ECHILD, 2147483647, -2147483647 - 1};
  for (size_t i = 0; i < sizeof odd / sizeof odd[0]; i++) {
    assert_non_null(memport_strerror(odd[i]));
    assert_string_equal(memport_err_name(odd[i]), "MEMPORT_EUNKNOWN");
  }
}

static void test_error_codes_are_negated_errno_values(void **state) {
  (void)state;
  assert_int_equal(MEMPORT_EINVAL, -EINVAL);
  assert_int_equal(MEMPORT_ENOMEM, -ENOMEM);
  assert_int_equal(MEMPORT_EPEER, -EPIPE);
  assert_int_equal(MEMPORT_ENOTSUP, -ENOTSUP);
  assert_int_equal(MEMPORT_ETIMEDOUT, -ETIMEDOUT);
}

static void test_version_macros_match_the_library(void **state) {
  (void)state;
  assert_int_equal(memport_version(), MEMPORT_VERSION);
  assert_int_equal(MEMPORT_VERSION,
                   MEMPORT_VERSION_NUM(MEMPORT_VERSION_MAJOR, MEMPORT_VERSION_MINOR, MEMPORT_VERSION_PATCH));
  assert_string_equal(memport_version_string(), MEMPORT_VERSION_STRING);
  char expect[64];
  snprintf(expect, sizeof expect, "%d.%d.%d", MEMPORT_VERSION_MAJOR, MEMPORT_VERSION_MINOR,
           MEMPORT_VERSION_PATCH);
  assert_string_equal(memport_version_string(), expect);
  assert_true(MEMPORT_VERSION_CHECK(MEMPORT_VERSION_MAJOR, MEMPORT_VERSION_MINOR, MEMPORT_VERSION_PATCH));
  assert_true(MEMPORT_VERSION_CHECK(0, 0, 0));
  assert_false(MEMPORT_VERSION_CHECK(MEMPORT_VERSION_MAJOR + 1, 0, 0));
  assert_false(MEMPORT_VERSION_CHECK(MEMPORT_VERSION_MAJOR, MEMPORT_VERSION_MINOR, MEMPORT_VERSION_PATCH + 1));
  assert_true(MEMPORT_VERSION_NUM(1, 2, 3) > MEMPORT_VERSION_NUM(1, 1, 255));
  assert_true(MEMPORT_VERSION_NUM(2, 0, 0) > MEMPORT_VERSION_NUM(1, 255, 255));
}

static void test_page_size_is_the_systems_and_a_power_of_two(void **state) {
  (void)state;
  size_t page = memport_page_size();
  assert_int_equal(page, (size_t)sysconf(_SC_PAGESIZE));
  assert_true(page >= 4096);
  assert_int_equal(page & (page - 1), 0);
  assert_int_equal(memport_page_size(), page); /* cached value stays the same */
}

static void test_close_and_query_functions_accept_null(void **state) {
  (void)state;
  th_assert_ok(memport_region_close(NULL));
  assert_int_equal(memport_region_size(NULL), 0);
  th_assert_rc(memport_region_is_readonly(NULL), MEMPORT_EINVAL);
  th_assert_rc(memport_unmap(NULL), MEMPORT_EINVAL);
  size_t len;
  th_assert_rc(memport_mapping_size(NULL, &len), MEMPORT_EINVAL);
  th_assert_ok(memport_sem_close(NULL));
  th_assert_ok(memport_port_close(NULL));
  th_assert_ok(memport_msg_close(NULL));
  th_assert_ok(memport_service_close(NULL));
  th_assert_ok(memport_publication_close(NULL));
  th_assert_ok(memport_ring_close(NULL));
  th_assert_ok(memport_chan_close(NULL));
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_every_error_code_has_its_name),
      cmocka_unit_test(test_every_error_code_has_a_distinct_description),
      cmocka_unit_test(test_unknown_codes_get_generic_text_never_null),
      cmocka_unit_test(test_error_codes_are_negated_errno_values),
      cmocka_unit_test(test_version_macros_match_the_library),
      cmocka_unit_test(test_page_size_is_the_systems_and_a_power_of_two),
      cmocka_unit_test(test_close_and_query_functions_accept_null),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}

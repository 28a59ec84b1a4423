/* SPDX-License-Identifier: MIT */
/* _memport.c: PLACEHOLDER from the pybuild branch (an almost empty module to test the build plumbing); pyext's file replaces it at merge. */
#include "_memport.h"

#include <memport.h>

static struct PyModuleDef memport_module = {
    PyModuleDef_HEAD_INIT, "memport._memport", "placeholder", -1, NULL, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__memport(void);

PyMODINIT_FUNC PyInit__memport(void)
{
    PyObject *m = PyModule_Create(&memport_module);
    if (m == NULL)
        return NULL;
    PyObject *err = PyErr_NewException("memport.Error", PyExc_Exception, NULL);
    if (err == NULL || PyModule_AddObject(m, "Error", err) < 0) {
        Py_XDECREF(err);
        Py_DECREF(m);
        return NULL;
    }
    if (PyModule_AddStringConstant(m, "strerror_einval", memport_strerror(MEMPORT_EINVAL)) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}

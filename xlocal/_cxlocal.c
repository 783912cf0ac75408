/* The compiled fast path of xlocal's core (see xlocal/_core.py, the specification).
 *
 * This module implements only the hot paths, and only in their common case: the read
 * of an attribute (hit and miss), the binder (making a Binding), and Binding's
 * __enter__ and __exit__.  Each callable it makes wraps the pure-Python function it
 * replaces, and hands every call outside its common case to that function unchanged
 * (odd arguments, out-of-order exits, failed resets, invalid names...), so that
 * messages and semantics are those of the pure core.
 *
 * Only the CPython C API of the supported versions (3.9 to 3.13) is used.
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>

/* Set by install(): objects of the pure core that the fast paths use. */
static PyObject *ENTRY = NULL;          /* _core._ENTRY */
static PyTypeObject *BINDING = NULL;    /* _core.Binding */
static PyObject *VALID_NAMES = NULL;    /* _core._valid_names, a set */
static PyObject *CHECK_NAMES = NULL;    /* _core._check_names(x, names) */
static PyObject *EXIT_REST = NULL;      /* _core._exit_rest(binding, owner, mine) */
static PyObject *RESET_OR_REFUSE = NULL; /* _core._reset_or_refuse(binding, rec, tok) */
static PyObject *UNBOUND = NULL;        /* _core._UnboundError */
static PyObject *UNDECLARED = NULL;     /* _core._UndeclaredError */

/* Offsets of Binding's slots, read from its member descriptors, and of xlocal's. */
static Py_ssize_t OFF_ENTRIES = -1, OFF_NAMES = -1, OFF_VAR = -1, OFF_XLOCAL = -1;
static Py_ssize_t OFF_XVAR = -1;
static PyTypeObject *XLOCAL = NULL; /* _core.xlocal */
static PyObject *STR_GETATTRIBUTE = NULL, *STR_CALL = NULL;

#define SLOT(obj, off) (*(PyObject **)((char *)(obj) + (off)))

/* -- the callables: a method-like object wrapping the pure function it replaces ---- */

typedef struct {
    PyObject_HEAD
    vectorcallfunc vectorcall;
    PyObject *fallback; /* the pure-Python function, for every uncommon call */
    PyObject *var;      /* the xlocal's ContextVar (reader, binder) */
    PyObject *own;      /* namespace.own, or NULL when empty */
    PyObject *declared; /* namespace.declared, or NULL for an open namespace */
} Method;

static PyTypeObject MethodType;

static PyObject *
call_fallback(Method *m, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    return PyObject_Vectorcall(m->fallback, args, nargsf, kwnames);
}

static PyObject *
method_get(PyObject *self, PyObject *obj, PyObject *type)
{
    if (obj == NULL || obj == Py_None) {
        Py_INCREF(self);
        return self;
    }
    return PyMethod_New(self, obj);
}

static int
method_traverse(Method *m, visitproc visit, void *arg)
{
    Py_VISIT(m->fallback);
    Py_VISIT(m->var);
    Py_VISIT(m->own);
    Py_VISIT(m->declared);
    return 0;
}

static int
method_clear(Method *m)
{
    Py_CLEAR(m->fallback);
    Py_CLEAR(m->var);
    Py_CLEAR(m->own);
    Py_CLEAR(m->declared);
    return 0;
}

static void
method_dealloc(Method *m)
{
    PyObject_GC_UnTrack(m);
    method_clear(m);
    Py_TYPE(m)->tp_free((PyObject *)m);
}

/* Introspection goes to the pure function: __name__, __doc__, signature... */
static PyObject *
method_getattro(PyObject *self, PyObject *name)
{
    if (PyUnicode_Check(name) && PyUnicode_CompareWithASCIIString(name, "__doc__") == 0) {
        return PyObject_GetAttr(((Method *)self)->fallback, name);
    }
    PyObject *found = PyObject_GenericGetAttr(self, name);
    if (found != NULL || !PyErr_ExceptionMatches(PyExc_AttributeError)) {
        return found;
    }
    PyErr_Clear();
    return PyObject_GetAttr(((Method *)self)->fallback, name);
}

static PyObject *
method_repr(Method *m)
{
    return PyUnicode_FromFormat("<compiled %R>", m->fallback);
}

static PyMemberDef method_members[] = {
    {"__wrapped__", T_OBJECT, offsetof(Method, fallback), READONLY,
     "the pure-Python function this one implements"},
    {NULL},
};

static PyTypeObject MethodType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "xlocal._cxlocal.method",
    .tp_basicsize = sizeof(Method),
    .tp_dealloc = (destructor)method_dealloc,
    .tp_vectorcall_offset = offsetof(Method, vectorcall),
    .tp_repr = (reprfunc)method_repr,
    .tp_call = PyVectorcall_Call,
    .tp_getattro = method_getattro,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL |
                Py_TPFLAGS_METHOD_DESCRIPTOR,
    .tp_doc = "A compiled fast path of a function of xlocal's pure-Python core.",
    .tp_traverse = (traverseproc)method_traverse,
    .tp_clear = (inquiry)method_clear,
    .tp_members = method_members,
    .tp_descr_get = method_get,
};

static PyObject *
make_method(vectorcallfunc call, PyObject *fallback, PyObject *var, PyObject *own,
            PyObject *declared)
{
    Method *m = PyObject_GC_New(Method, &MethodType);
    if (m == NULL) {
        return NULL;
    }
    m->vectorcall = call;
    Py_INCREF(fallback);
    m->fallback = fallback;
    Py_XINCREF(var);
    m->var = var;
    Py_XINCREF(own);
    m->own = own;
    Py_XINCREF(declared);
    m->declared = declared;
    PyObject_GC_Track(m);
    return (PyObject *)m;
}

/* -- the read path: xlocal.__getattribute__ ----------------------------------------- */

static PyObject *
raise_miss(PyObject *error_type, PyObject *attr, PyObject *self)
{
    PyObject *args[2] = {attr, self};
    PyObject *error = PyObject_Vectorcall(error_type, args, 2, NULL);
    if (error != NULL) {
        PyErr_SetObject((PyObject *)Py_TYPE(error), error);
        Py_DECREF(error);
    }
    return NULL;
}

static PyObject *read_miss(Method *m, PyObject *self, PyObject *attr);

static PyObject *
read_attr(Method *m, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    if (PyVectorcall_NARGS(nargsf) != 2 || kwnames != NULL ||
        !PyUnicode_CheckExact(args[1])) {
        return call_fallback(m, args, nargsf, kwnames);
    }
    PyObject *self = args[0], *attr = args[1], *frame, *value;
    if (PyContextVar_Get(m->var, NULL, &frame) < 0) {
        return NULL;
    }
    if (!PyDict_CheckExact(frame)) {
        Py_DECREF(frame);
        return call_fallback(m, args, nargsf, kwnames);
    }
    value = PyDict_GetItemWithError(frame, attr);
    if (value != NULL) {
        Py_INCREF(value);
        Py_DECREF(frame);
        return value;
    }
    Py_DECREF(frame);
    if (PyErr_Occurred()) {
        return NULL;
    }
    return read_miss(m, self, attr);
}

/* The miss: as the pure reader does after its KeyError. */
static PyObject *
read_miss(Method *m, PyObject *self, PyObject *attr)
{
    if (PyUnicode_GET_LENGTH(attr) > 0 && PyUnicode_READ_CHAR(attr, 0) == '_') {
        return PyObject_GenericGetAttr(self, attr);
    }
    if (m->own != NULL) {
        int own = PySet_Contains(m->own, attr);
        if (own < 0) {
            return NULL;
        }
        if (own) {
            return PyObject_GenericGetAttr(self, attr);
        }
    }
    if (m->declared != NULL) {
        int declared = PySet_Contains(m->declared, attr);
        if (declared < 0) {
            return NULL;
        }
        if (!declared) {
            return raise_miss(UNDECLARED, attr, self);
        }
    }
    return raise_miss(UNBOUND, attr, self);
}

/* -- the binder: xlocal.__call__ ------------------------------------------------------ */

/* A Binding of *names*, a fresh dict whose keys are exact str (stolen). */
static PyObject *
bind_names(Method *m, PyObject *self, PyObject *names)
{
    Py_ssize_t pos = 0;
    PyObject *key, *value;
    int valid = 1;
    while (valid && PyDict_Next(names, &pos, &key, &value)) {
        if (m->declared != NULL) {
            valid = PySet_Contains(m->declared, key);
        }
        else {
            valid = PySet_Contains(VALID_NAMES, key);
            if (valid > 0 && m->own != NULL) {
                valid = PySet_Contains(m->own, key);
                valid = valid < 0 ? valid : !valid;
            }
        }
        if (valid < 0) {
            Py_DECREF(names);
            return NULL;
        }
    }
    if (!valid) {
        PyObject *checked = PyObject_CallFunctionObjArgs(CHECK_NAMES, self, names, NULL);
        if (checked == NULL) {
            Py_DECREF(names);
            return NULL;
        }
        Py_DECREF(checked);
    }
    PyObject *entries = PyDict_New();
    if (entries == NULL) {
        Py_DECREF(names);
        return NULL;
    }
    PyObject *binding = BINDING->tp_alloc(BINDING, 0);
    if (binding == NULL) {
        Py_DECREF(names);
        Py_DECREF(entries);
        return NULL;
    }
    Py_INCREF(self);
    SLOT(binding, OFF_XLOCAL) = self;
    Py_INCREF(m->var);
    SLOT(binding, OFF_VAR) = m->var;
    SLOT(binding, OFF_NAMES) = names;
    SLOT(binding, OFF_ENTRIES) = entries;
    return binding;
}

static PyObject *
bind(Method *m, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    Py_ssize_t nkw = kwnames == NULL ? 0 : PyTuple_GET_SIZE(kwnames);
    if (nargs != 1) {
        return call_fallback(m, args, nargsf, kwnames);
    }
    for (Py_ssize_t i = 0; i < nkw; i++) {
        if (!PyUnicode_CheckExact(PyTuple_GET_ITEM(kwnames, i))) {
            return call_fallback(m, args, nargsf, kwnames);
        }
    }
    PyObject *names = PyDict_New();
    if (names == NULL) {
        return NULL;
    }
    for (Py_ssize_t i = 0; i < nkw; i++) {
        if (PyDict_SetItem(names, PyTuple_GET_ITEM(kwnames, i), args[nargs + i]) < 0) {
            Py_DECREF(names);
            return NULL;
        }
    }
    return bind_names(m, args[0], names);
}

/* -- the slots of each xlocal's class: reads and calls without the method lookup -- */

static PyObject *
fast_getattro(PyObject *self, PyObject *attr)
{
    PyObject *var = SLOT(self, OFF_XVAR), *frame;
    if (var != NULL && PyUnicode_CheckExact(attr) && PyContextVar_CheckExact(var)) {
        if (PyContextVar_Get(var, NULL, &frame) < 0) {
            return NULL;
        }
        if (PyDict_CheckExact(frame)) {
            PyObject *value = PyDict_GetItemWithError(frame, attr);
            Py_XINCREF(value);
            Py_DECREF(frame);
            if (value != NULL) {
                return value;
            }
            if (PyErr_Occurred()) {
                return NULL;
            }
            PyObject *m = _PyType_Lookup(Py_TYPE(self), STR_GETATTRIBUTE);
            if (m != NULL && Py_TYPE(m) == &MethodType &&
                ((Method *)m)->vectorcall == (vectorcallfunc)read_attr &&
                ((Method *)m)->var == var) {
                return read_miss((Method *)m, self, attr);
            }
        }
        else {
            Py_DECREF(frame);
        }
    }
    /* Anything else: call __getattribute__, as Python's own slot would. */
    PyObject *m = _PyType_Lookup(Py_TYPE(self), STR_GETATTRIBUTE);
    if (m == NULL) {
        return PyObject_GenericGetAttr(self, attr);
    }
    Py_INCREF(m);
    PyObject *args[2] = {self, attr}, *result;
    if (Py_TYPE(m) == &MethodType) {
        result = PyObject_Vectorcall(m, args, 2, NULL);
    }
    else {
        PyObject *bound = PyObject_GetAttr(self, STR_GETATTRIBUTE);
        result = bound == NULL ? NULL : PyObject_CallOneArg(bound, attr);
        Py_XDECREF(bound);
    }
    Py_DECREF(m);
    return result;
}

static PyObject *
fast_call(PyObject *self, PyObject *args, PyObject *kwds)
{
    PyObject *m = _PyType_Lookup(Py_TYPE(self), STR_CALL);
    if (m == NULL) {
        return PyErr_Format(PyExc_TypeError, "'%.200s' object is not callable",
                            Py_TYPE(self)->tp_name);
    }
    Py_INCREF(m);
    PyObject *result = NULL;
    int simple = Py_TYPE(m) == &MethodType &&
                 ((Method *)m)->vectorcall == (vectorcallfunc)bind &&
                 PyTuple_GET_SIZE(args) == 0 && (kwds == NULL || PyDict_CheckExact(kwds));
    if (simple && kwds != NULL) {
        Py_ssize_t pos = 0;
        PyObject *key, *value;
        while (simple && PyDict_Next(kwds, &pos, &key, &value)) {
            simple = PyUnicode_CheckExact(key);
        }
    }
    if (simple) {
        PyObject *names = kwds == NULL ? PyDict_New() : PyDict_Copy(kwds);
        result = names == NULL ? NULL : bind_names((Method *)m, self, names);
    }
    else {
        /* As Python's own slot: __call__ with self first. */
        Py_ssize_t n = PyTuple_GET_SIZE(args);
        PyObject *full = PyTuple_New(n + 1);
        if (full != NULL) {
            Py_INCREF(self);
            PyTuple_SET_ITEM(full, 0, self);
            for (Py_ssize_t i = 0; i < n; i++) {
                PyObject *item = PyTuple_GET_ITEM(args, i);
                Py_INCREF(item);
                PyTuple_SET_ITEM(full, i + 1, item);
            }
            PyObject *func = Py_TYPE(m) == &MethodType ? ((Method *)m)->fallback : m;
            result = PyObject_Call(func, full, kwds);
            Py_DECREF(full);
        }
    }
    Py_DECREF(m);
    return result;
}

/* -- Binding.__enter__ and Binding.__exit__ ----------------------------------------- */

static PyObject *
enter(Method *m, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    PyObject *self = PyVectorcall_NARGS(nargsf) == 1 ? args[0] : NULL;
    PyObject *owner = (PyObject *)PyEval_GetFrame();
    if (owner == NULL && PyErr_Occurred()) {
        return NULL;
    }
    if (self == NULL || kwnames != NULL || owner == NULL ||
        !PyObject_TypeCheck(self, BINDING)) {
        return call_fallback(m, args, nargsf, kwnames);
    }
    PyObject *var = SLOT(self, OFF_VAR), *names = SLOT(self, OFF_NAMES);
    PyObject *entries = SLOT(self, OFF_ENTRIES), *x = SLOT(self, OFF_XLOCAL);
    if (var == NULL || names == NULL || entries == NULL || x == NULL ||
        !PyDict_CheckExact(entries) || !PyDict_CheckExact(names)) {
        return call_fallback(m, args, nargsf, kwnames);
    }
    PyObject *parent, *frame, *record, *token, *entry, *older;
    if (PyContextVar_Get(var, NULL, &parent) < 0) {
        return NULL;
    }
    if (!PyDict_CheckExact(parent)) {
        Py_DECREF(parent);
        return call_fallback(m, args, nargsf, kwnames);
    }
    frame = PyDict_Copy(parent);
    if (frame == NULL || PyDict_Update(frame, names) < 0) {
        Py_XDECREF(frame);
        Py_DECREF(parent);
        return NULL;
    }
    record = PyTuple_Pack(2, names, parent);
    Py_DECREF(parent);
    if (record == NULL || PyDict_SetItem(frame, ENTRY, record) < 0) {
        Py_XDECREF(record);
        Py_DECREF(frame);
        return NULL;
    }
    token = PyContextVar_Set(var, frame);
    Py_DECREF(frame);
    if (token == NULL) {
        Py_DECREF(record);
        return NULL;
    }
    older = PyDict_GetItemWithError(entries, owner);
    if (older == NULL && PyErr_Occurred()) {
        goto undo;
    }
    entry = PyTuple_Pack(3, record, token, older == NULL ? Py_None : older);
    if (entry == NULL) {
        goto undo;
    }
    if (PyDict_SetItem(entries, owner, entry) < 0) {
        Py_DECREF(entry);
        goto undo;
    }
    Py_DECREF(entry);
    Py_DECREF(record);
    Py_DECREF(token);
    Py_INCREF(x);
    return x;
undo:
    /* Leave nothing bound that no exit could find (only on a memory error). */
    {
        PyObject *type, *value, *tb;
        PyErr_Fetch(&type, &value, &tb);
        if (PyContextVar_Reset(var, token) < 0) {
            PyErr_Clear();
        }
        PyErr_Restore(type, value, tb);
    }
    Py_DECREF(record);
    Py_DECREF(token);
    return NULL;
}

static PyObject *
exit_(Method *m, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    PyObject *self = PyVectorcall_NARGS(nargsf) == 4 ? args[0] : NULL;
    PyObject *owner = (PyObject *)PyEval_GetFrame();
    if (owner == NULL && PyErr_Occurred()) {
        return NULL;
    }
    if (self == NULL || kwnames != NULL || owner == NULL ||
        !PyObject_TypeCheck(self, BINDING)) {
        return call_fallback(m, args, nargsf, kwnames);
    }
    PyObject *var = SLOT(self, OFF_VAR), *entries = SLOT(self, OFF_ENTRIES);
    if (var == NULL || entries == NULL || !PyDict_CheckExact(entries)) {
        return call_fallback(m, args, nargsf, kwnames);
    }
    PyObject *mine = PyDict_GetItemWithError(entries, owner);
    if (mine == NULL) {
        if (PyErr_Occurred()) {
            return NULL;
        }
    }
    else {
        Py_INCREF(mine);
        if (PyDict_DelItem(entries, owner) < 0) {
            Py_DECREF(mine);
            return NULL;
        }
    }
    if (mine != NULL && PyTuple_CheckExact(mine) && PyTuple_GET_SIZE(mine) == 3 &&
        PyTuple_GET_ITEM(mine, 2) == Py_None) {
        PyObject *top, *record = PyTuple_GET_ITEM(mine, 0);
        if (PyContextVar_Get(var, NULL, &top) < 0) {
            Py_DECREF(mine);
            return NULL;
        }
        PyObject *active = PyDict_CheckExact(top) ? PyDict_GetItemWithError(top, ENTRY)
                                                  : NULL;
        Py_DECREF(top);
        if (active == NULL && PyErr_Occurred()) {
            Py_DECREF(mine);
            return NULL;
        }
        if (active == record) {
            PyObject *token = PyTuple_GET_ITEM(mine, 1);
            if (PyContextVar_Reset(var, token) < 0) {
                if (!PyErr_ExceptionMatches(PyExc_ValueError) &&
                    !PyErr_ExceptionMatches(PyExc_RuntimeError)) {
                    Py_DECREF(mine);
                    return NULL;
                }
                /* Refused: the pure core tries again and reports it. */
                PyErr_Clear();
                PyObject *done = PyObject_CallFunctionObjArgs(RESET_OR_REFUSE, self,
                                                              record, token, NULL);
                Py_DECREF(mine);
                return done;
            }
            Py_DECREF(mine);
            Py_RETURN_NONE;
        }
    }
    PyObject *rest = PyObject_CallFunctionObjArgs(EXIT_REST, self, owner,
                                                  mine == NULL ? Py_None : mine, NULL);
    Py_XDECREF(mine);
    return rest;
}

/* -- the module ------------------------------------------------------------------- */

static int
is_open(PyObject *set)
{
    /* NULL for None or an empty set: nothing to look up. */
    return set == Py_None || (PyAnySet_Check(set) && PySet_GET_SIZE(set) == 0);
}

static PyObject *
mod_reader(PyObject *module, PyObject *args)
{
    PyObject *fallback, *var, *own, *declared;
    if (!PyArg_ParseTuple(args, "OOOO:reader", &fallback, &var, &own, &declared)) {
        return NULL;
    }
    if (!PyContextVar_CheckExact(var) || !(own == Py_None || PyAnySet_Check(own)) ||
        !(declared == Py_None || PyAnySet_Check(declared))) {
        PyErr_SetString(PyExc_TypeError,
                        "reader() takes a function, a ContextVar and two sets or None");
        return NULL;
    }
    return make_method((vectorcallfunc)read_attr, fallback, var,
                       is_open(own) ? NULL : own, declared == Py_None ? NULL : declared);
}

static PyObject *
mod_binder(PyObject *module, PyObject *args)
{
    PyObject *fallback, *var, *own, *declared;
    if (!PyArg_ParseTuple(args, "OOOO:binder", &fallback, &var, &own, &declared)) {
        return NULL;
    }
    if (BINDING == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "binder() needs install() first");
        return NULL;
    }
    if (!PyContextVar_CheckExact(var) || !(own == Py_None || PyAnySet_Check(own)) ||
        !(declared == Py_None || PyAnySet_Check(declared))) {
        PyErr_SetString(PyExc_TypeError,
                        "binder() takes a function, a ContextVar and two sets or None");
        return NULL;
    }
    return make_method((vectorcallfunc)bind, fallback, var, is_open(own) ? NULL : own,
                       declared == Py_None ? NULL : declared);
}

static PyObject *
mod_attach(PyObject *module, PyObject *cls)
{
    if (XLOCAL == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "attach() needs install() first");
        return NULL;
    }
    if (!PyType_Check(cls) || !PyType_IsSubtype((PyTypeObject *)cls, XLOCAL) ||
        !(((PyTypeObject *)cls)->tp_flags & Py_TPFLAGS_HEAPTYPE)) {
        PyErr_SetString(PyExc_TypeError, "attach() takes the class of one xlocal");
        return NULL;
    }
    PyTypeObject *type = (PyTypeObject *)cls;
    PyObject *read = PyDict_GetItemWithError(type->tp_dict, STR_GETATTRIBUTE);
    PyObject *call = PyDict_GetItemWithError(type->tp_dict, STR_CALL);
    if (read == NULL || call == NULL || Py_TYPE(read) != &MethodType ||
        Py_TYPE(call) != &MethodType) {
        if (!PyErr_Occurred()) {
            PyErr_SetString(PyExc_TypeError,
                            "attach() needs the compiled __getattribute__ and __call__");
        }
        return NULL;
    }
    type->tp_getattro = fast_getattro;
    type->tp_call = fast_call;
    Py_RETURN_NONE;
}

static Py_ssize_t
slot_offset(PyTypeObject *type, const char *name)
{
    PyObject *descr = PyDict_GetItemString(type->tp_dict, name);
    if (descr == NULL || !PyObject_TypeCheck(descr, &PyMemberDescr_Type)) {
        PyErr_Format(PyExc_TypeError, "install() needs %s.%s to be a slot",
                     type->tp_name, name);
        return -1;
    }
    PyMemberDef *member = ((PyMemberDescrObject *)descr)->d_member;
    if (member->type != T_OBJECT_EX) {
        PyErr_Format(PyExc_TypeError, "install() needs %s.%s to be an object slot",
                     type->tp_name, name);
        return -1;
    }
    return member->offset;
}

static PyObject *
mod_install(PyObject *module, PyObject *args)
{
    PyObject *xtype, *binding, *entry, *valid, *check, *rest, *reset, *unbound,
        *undeclared, *py_enter, *py_exit;
    if (!PyArg_ParseTuple(args, "O!O!OO!OOOOOOO:install", &PyType_Type, &xtype,
                          &PyType_Type, &binding, &entry, &PySet_Type, &valid, &check,
                          &rest, &reset, &unbound, &undeclared, &py_enter, &py_exit)) {
        return NULL;
    }
    PyTypeObject *type = (PyTypeObject *)binding;
    Py_ssize_t entries = slot_offset(type, "_entries"), names = slot_offset(type, "_names"),
               var = slot_offset(type, "_var"), x = slot_offset(type, "_xlocal"),
               xvar = slot_offset((PyTypeObject *)xtype, "_var");
    if (entries < 0 || names < 0 || var < 0 || x < 0 || xvar < 0) {
        return NULL;
    }
    if (STR_GETATTRIBUTE == NULL) {
        STR_GETATTRIBUTE = PyUnicode_InternFromString("__getattribute__");
        STR_CALL = PyUnicode_InternFromString("__call__");
        if (STR_GETATTRIBUTE == NULL || STR_CALL == NULL) {
            return NULL;
        }
    }
    PyObject *c_enter = make_method((vectorcallfunc)enter, py_enter, NULL, NULL, NULL);
    PyObject *c_exit = make_method((vectorcallfunc)exit_, py_exit, NULL, NULL, NULL);
    if (c_enter == NULL || c_exit == NULL) {
        Py_XDECREF(c_enter);
        Py_XDECREF(c_exit);
        return NULL;
    }
    OFF_ENTRIES = entries, OFF_NAMES = names, OFF_VAR = var, OFF_XLOCAL = x;
    OFF_XVAR = xvar;
#define KEEP(global, value) \
    Py_INCREF(value);       \
    Py_XSETREF(global, value)
    KEEP(BINDING, type);
    KEEP(XLOCAL, (PyTypeObject *)xtype);
    KEEP(ENTRY, entry);
    KEEP(VALID_NAMES, valid);
    KEEP(CHECK_NAMES, check);
    KEEP(EXIT_REST, rest);
    KEEP(RESET_OR_REFUSE, reset);
    KEEP(UNBOUND, unbound);
    KEEP(UNDECLARED, undeclared);
#undef KEEP
    return Py_BuildValue("(NN)", c_enter, c_exit);
}

static PyMethodDef module_methods[] = {
    {"install", mod_install, METH_VARARGS,
     "install(xlocal, Binding, ENTRY, valid_names, check_names, exit_rest, reset_or_refuse, "
     "UnboundError, UndeclaredError, enter, exit) -> (enter, exit)\n\n"
     "Take the pure core's objects; return compiled __enter__ and __exit__."},
    {"reader", mod_reader, METH_VARARGS,
     "reader(read, var, own, declared): the compiled __getattribute__ of an xlocal."},
    {"attach", mod_attach, METH_O,
     "attach(cls): give the class of one xlocal the compiled read and call slots."},
    {"binder", mod_binder, METH_VARARGS,
     "binder(bind, var, own, declared): the compiled __call__ of an xlocal."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT,
    .m_name = "xlocal._cxlocal",
    .m_doc = "The compiled fast path of xlocal's core; xlocal/_core.py is its "
             "specification and fallback.",
    .m_size = -1,
    .m_methods = module_methods,
};

PyMODINIT_FUNC
PyInit__cxlocal(void)
{
    if (PyType_Ready(&MethodType) < 0) {
        return NULL;
    }
    return PyModule_Create(&module_def);
}

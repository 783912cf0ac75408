/* The compiled fast path of xlocal's core (the pure core, xlocal/_core.py and the
 * rooms it imports, is its specification; docs/architecture.rst describes both).
 *
 * This module implements only the hot paths, and only in their common case: the read
 * of an attribute (hit and miss), the binder (making a Binding), and Binding's
 * __enter__ and __exit__.  Each callable it makes wraps the pure-Python function it
 * replaces, and hands every call outside its common case to that function unchanged
 * (odd arguments, out-of-order exits, refused resets, names not yet known valid...),
 * so that messages and semantics are those of the pure core.
 *
 * Rules this file keeps, as CPython's own modules do:
 * - Every object used across a call that may run Python code (a name's __eq__ or
 *   __hash__, an allocation that runs the garbage collector and so __del__ and weakref
 *   callbacks, a context variable's set or reset that frees old values) is held by a
 *   strong reference of this function's own.
 * - No C static holds a Python object: the module's objects live in its per-module
 *   state (multi-phase init, PEP 489), so that subinterpreters and a re-import each
 *   get their own, and every object this module makes keeps its module alive.
 *
 * Sections: the method type (a compiled function that looks like its pure one); the
 * read path; the binder; Binding.__enter__ and __exit__; the class slots attach()
 * gives each xlocal's own class; the module.
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>

typedef struct {
    PyTypeObject *method_type;  /* the type of the compiled functions below */
    PyTypeObject *wrapped_type; /* the type of the functions wrap() makes */
    /* Set by install(): objects of the pure core that the fast paths use. */
    PyObject *entry;            /* _frames._ENTRY */
    PyTypeObject *binding;      /* _binding.Binding */
    PyTypeObject *xlocal;       /* _core.xlocal */
    PyObject *valid_names;      /* _core._valid_names, a set of exact str */
    PyObject *exit_rest;        /* _misuse._exit_rest(binding, owner, mine) */
    PyObject *reset_or_refuse;  /* _misuse._reset_or_refuse(binding, record, token) */
    PyObject *unbound;          /* _errors._UnboundError */
    PyObject *undeclared;       /* _errors._UndeclaredError */
    PyObject *str_getattr;      /* "__getattr__" */
    /* Offsets of Binding's slots, read from its member descriptors. */
    Py_ssize_t off_entries, off_names, off_var, off_xlocal;
} State;

static inline State *
get_state(PyObject *module)
{
    return (State *)PyModule_GetState(module);
}

#if PY_VERSION_HEX < 0x030A0000
static inline PyObject *
Py_NewRef(PyObject *obj)
{
    Py_INCREF(obj);
    return obj;
}

static inline PyObject *
Py_XNewRef(PyObject *obj)
{
    Py_XINCREF(obj);
    return obj;
}
#endif

#define SLOT(obj, off) (*(PyObject **)((char *)(obj) + (off)))

/* A context variable's set and reset.  On CPython 3.10 and 3.11 the garbage collector
 * is held off meanwhile: a collection that starts inside them can run a finalizer that
 * sets a context variable of the same thread, and CPython before 3.12 then corrupts
 * the thread's context (fixed in CPython 3.12).  3.9 has no C API to hold it off: the
 * README's Known limits say so. */
#if PY_VERSION_HEX >= 0x030A0000 && PY_VERSION_HEX < 0x030C0000
#define HOLD_GC_OFF 1
#else
#define HOLD_GC_OFF 0
#endif

static PyObject *
var_set(PyObject *var, PyObject *value)
{
#if HOLD_GC_OFF
    int was_enabled = PyGC_Disable();
    PyObject *token = PyContextVar_Set(var, value);
    if (was_enabled) {
        PyGC_Enable();
    }
    return token;
#else
    return PyContextVar_Set(var, value);
#endif
}

static int
var_reset(PyObject *var, PyObject *token)
{
#if HOLD_GC_OFF
    int was_enabled = PyGC_Disable();
    int done = PyContextVar_Reset(var, token);
    if (was_enabled) {
        PyGC_Enable();
    }
    return done;
#else
    return PyContextVar_Reset(var, token);
#endif
}

/* -- the method type: a compiled function wrapping the pure one it implements ------ */

typedef struct {
    PyObject_HEAD
    vectorcallfunc vectorcall;
    PyObject *weakreflist;
    PyObject *module;   /* this module: its state */
    PyObject *fallback; /* the pure-Python function, for every uncommon call */
    /* What the fast path works with.  A reader or binder: the xlocal's ContextVar,
     * namespace.own (NULL when empty), namespace.declared (NULL for an open
     * namespace).  capture: the Snapshot class, spawn's _carried, _ENTRY.  wrap: the
     * compiled capture, _steps.lazy, _steps.steps_in.  Enter and exit: nothing. */
    PyObject *var, *own, *declared;
    Py_ssize_t offset; /* capture: the offset of Snapshot's _context slot */
} Method;

#define M_SNAPSHOT(m) ((PyTypeObject *)(m)->var)
#define M_CARRIED(m) ((m)->own)
#define M_ENTRY(m) ((m)->declared)
#define M_CAPTURE(m) ((Method *)(m)->var)
#define M_LAZY(m) ((m)->own)
#define M_STEPS_IN(m) ((m)->declared)

static PyObject *
call_fallback(Method *m, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    return PyObject_Vectorcall(m->fallback, args, nargsf, kwnames);
}

static PyObject *
method_get(PyObject *self, PyObject *obj, PyObject *Py_UNUSED(type))
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
    Py_VISIT(Py_TYPE(m));
    Py_VISIT(m->module);
    Py_VISIT(m->fallback);
    Py_VISIT(m->var);
    Py_VISIT(m->own);
    Py_VISIT(m->declared);
    return 0;
}

static int
method_clear(Method *m)
{
    Py_CLEAR(m->module);
    Py_CLEAR(m->fallback);
    Py_CLEAR(m->var);
    Py_CLEAR(m->own);
    Py_CLEAR(m->declared);
    return 0;
}

static void
method_dealloc(Method *m)
{
    PyTypeObject *type = Py_TYPE(m);
    PyObject_GC_UnTrack(m);
    if (m->weakreflist != NULL) {
        PyObject_ClearWeakRefs((PyObject *)m);
    }
    method_clear(m);
    type->tp_free((PyObject *)m);
    Py_DECREF(type);
}

/* The names this type answers itself; every other attribute is the pure function's
 * (__name__, __qualname__, __module__, __doc__, __dict__, __defaults__...), read and
 * written, so that introspection, pickling by reference and functools.wraps see the
 * function this one implements. */
static int
is_own_attribute(PyObject *name)
{
    static const char *const own[] = {
        "__class__", "__get__", "__call__", "__reduce__", "__reduce_ex__",
        "__copy__", "__deepcopy__", "__wrapped__", "__repr__", "__eq__", "__ne__",
        "__hash__", "__getattribute__", "__setattr__", "__delattr__", "__sizeof__",
        NULL,
    };
    if (!PyUnicode_Check(name)) {
        return 1;
    }
    for (const char *const *p = own; *p != NULL; p++) {
        if (PyUnicode_CompareWithASCIIString(name, *p) == 0) {
            return 1;
        }
    }
    return 0;
}

static PyObject *
method_getattro(PyObject *self, PyObject *name)
{
    if (is_own_attribute(name)) {
        return PyObject_GenericGetAttr(self, name);
    }
    return PyObject_GetAttr(((Method *)self)->fallback, name);
}

static int
method_setattro(PyObject *self, PyObject *name, PyObject *value)
{
    if (is_own_attribute(name)) {
        return PyObject_GenericSetAttr(self, name, value);
    }
    return PyObject_SetAttr(((Method *)self)->fallback, name, value);
}

static PyObject *
method_repr(Method *m)
{
    /* As the pure function shows itself: the two cores look the same. */
    return PyObject_Repr(m->fallback);
}

/* Pickled by reference, as a function is: a copy is the object itself. */
static PyObject *
method_reduce(Method *m, PyObject *Py_UNUSED(ignored))
{
    return PyObject_GetAttrString(m->fallback, "__qualname__");
}

static PyObject *
method_copy(PyObject *self, PyObject *Py_UNUSED(ignored))
{
    Py_INCREF(self);
    return self;
}

static PyMethodDef method_methods[] = {
    {"__reduce__", (PyCFunction)method_reduce, METH_NOARGS,
     "Pickled by reference, by the qualified name of the function it implements."},
    {"__copy__", method_copy, METH_NOARGS, "A function is its own copy."},
    {"__deepcopy__", method_copy, METH_O, "A function is its own copy."},
    {NULL},
};

static PyMemberDef method_members[] = {
    {"__wrapped__", T_OBJECT, offsetof(Method, fallback), READONLY,
     "the pure-Python function this one implements"},
    {"__weaklistoffset__", T_PYSSIZET, offsetof(Method, weakreflist), READONLY, NULL},
    {"__vectorcalloffset__", T_PYSSIZET, offsetof(Method, vectorcall), READONLY, NULL},
    {NULL},
};

#ifndef Py_TPFLAGS_IMMUTABLETYPE
#define Py_TPFLAGS_IMMUTABLETYPE 0
#endif
#ifndef Py_TPFLAGS_DISALLOW_INSTANTIATION
#define Py_TPFLAGS_DISALLOW_INSTANTIATION 0
#endif

static PyType_Slot method_slots[] = {
    {Py_tp_dealloc, method_dealloc},
    {Py_tp_repr, method_repr},
    {Py_tp_call, PyVectorcall_Call},
    {Py_tp_getattro, method_getattro},
    {Py_tp_setattro, method_setattro},
    {Py_tp_traverse, method_traverse},
    {Py_tp_clear, method_clear},
    {Py_tp_methods, method_methods},
    {Py_tp_members, method_members},
    {Py_tp_descr_get, method_get},
    {Py_tp_doc, "A compiled fast path of a function of xlocal's pure-Python core."},
    {0, NULL},
};

static PyType_Spec method_spec = {
    .name = "xlocal._cxlocal.method",
    .basicsize = sizeof(Method),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL |
             Py_TPFLAGS_METHOD_DESCRIPTOR | Py_TPFLAGS_IMMUTABLETYPE |
             Py_TPFLAGS_DISALLOW_INSTANTIATION,
    .slots = method_slots,
};

static PyObject *
make_method(PyObject *module, vectorcallfunc call, PyObject *fallback, PyObject *var,
            PyObject *own, PyObject *declared)
{
    State *state = get_state(module);
    Method *m = PyObject_GC_New(Method, state->method_type);
    if (m == NULL) {
        return NULL;
    }
    m->vectorcall = call;
    m->weakreflist = NULL;
    m->module = Py_NewRef(module);
    m->fallback = Py_NewRef(fallback);
    m->var = Py_XNewRef(var);
    m->own = Py_XNewRef(own);
    m->declared = Py_XNewRef(declared);
    m->offset = 0;
    PyObject_GC_Track(m);
    return (PyObject *)m;
}

/* -- the read path: xlocal.__getattribute__ ----------------------------------------- */

/* Raise the error of a read of *attr* on *self* that found nothing, with its name and
 * object set, as the pure core's _errors._missed makes it. */
static PyObject *
raise_miss(PyObject *error_type, PyObject *attr, PyObject *self)
{
    PyObject *args[2] = {attr, self};
    PyObject *error = PyObject_Vectorcall(error_type, args, 2, NULL);
    if (error == NULL) {
        return NULL;
    }
#if PY_VERSION_HEX >= 0x030A0000
    if (PyObject_TypeCheck(error, (PyTypeObject *)PyExc_AttributeError)) {
        PyAttributeErrorObject *found = (PyAttributeErrorObject *)error;
        Py_XSETREF(found->name, Py_NewRef(attr));
        Py_XSETREF(found->obj, Py_NewRef(self));
    }
#else
    if (PyObject_SetAttrString(error, "name", attr) < 0 ||
        PyObject_SetAttrString(error, "obj", self) < 0) {
        Py_DECREF(error);
        return NULL;
    }
#endif
    PyErr_SetObject((PyObject *)Py_TYPE(error), error);
    Py_DECREF(error);
    return NULL;
}

/* The miss: as the pure reader does after its KeyError.  *m* and *self* are held by
 * the caller. */
static PyObject *
read_miss(Method *m, PyObject *self, PyObject *attr)
{
    State *state = get_state(m->module);
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
            return raise_miss(state->undeclared, attr, self);
        }
    }
    return raise_miss(state->unbound, attr, self);
}

/* A read of *attr*, an exact str, on *self* through the reader *m*.  Both are held by
 * the caller.  NULL with no exception set: not the common case, ask the pure core. */
static PyObject *
read_value(Method *m, PyObject *self, PyObject *attr)
{
    PyObject *frame, *value;
    if (PyContextVar_Get(m->var, NULL, &frame) < 0) {
        return NULL;
    }
    if (frame == NULL || !PyDict_CheckExact(frame)) {
        Py_XDECREF(frame);
        return NULL;
    }
    /* The lookup may run a bound name's __eq__: the frame is held, and frames are
     * never changed once made. */
    value = PyDict_GetItemWithError(frame, attr);
    Py_XINCREF(value);
    Py_DECREF(frame);
    if (value != NULL) {
        return value;
    }
    if (PyErr_Occurred()) {
        /* As the pure reader's `except KeyError`: a KeyError out of a name's __eq__
         * is a miss. */
        if (!PyErr_ExceptionMatches(PyExc_KeyError)) {
            return NULL;
        }
        PyErr_Clear();
    }
    return read_miss(m, self, attr);
}

static PyObject *
read_attr(Method *m, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    if (PyVectorcall_NARGS(nargsf) != 2 || kwnames != NULL ||
        !PyUnicode_CheckExact(args[1])) {
        return call_fallback(m, args, nargsf, kwnames);
    }
    PyObject *value = read_value(m, args[0], args[1]);
    if (value == NULL && !PyErr_Occurred()) {
        return call_fallback(m, args, nargsf, kwnames);
    }
    return value;
}

/* -- the binder: xlocal.__call__ ------------------------------------------------------ */

/* Whether every key of *names*, a dict whose keys are exact str, is a name the binder
 * *m* takes without asking the pure core: 1, 0, or -1 with an exception.  No Python
 * code runs: the sets hold exact str only. */
static int
all_known_valid(Method *m, State *state, PyObject *names)
{
    Py_ssize_t pos = 0;
    PyObject *key, *value;
    while (PyDict_Next(names, &pos, &key, &value)) {
        int valid;
        if (m->declared != NULL) {
            valid = PySet_Contains(m->declared, key);
        }
        else {
            valid = PySet_Contains(state->valid_names, key);
            if (valid > 0 && m->own != NULL) {
                valid = PySet_Contains(m->own, key);
                valid = valid < 0 ? valid : !valid;
            }
        }
        if (valid <= 0) {
            return valid;
        }
    }
    return 1;
}

/* A Binding of *names* on *self*, as the pure binder makes it; *names* is a fresh
 * dict, stolen. */
static PyObject *
make_binding(Method *m, State *state, PyObject *self, PyObject *names)
{
    PyObject *entries = PyDict_New();
    if (entries == NULL) {
        Py_DECREF(names);
        return NULL;
    }
    PyObject *binding = state->binding->tp_alloc(state->binding, 0);
    if (binding == NULL) {
        Py_DECREF(names);
        Py_DECREF(entries);
        return NULL;
    }
    SLOT(binding, state->off_xlocal) = Py_NewRef(self);
    SLOT(binding, state->off_var) = Py_NewRef(m->var);
    SLOT(binding, state->off_names) = names;
    SLOT(binding, state->off_entries) = entries;
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
    State *state = get_state(m->module);
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
    int valid = all_known_valid(m, state, names);
    if (valid <= 0) {
        Py_DECREF(names);
        return valid < 0 ? NULL : call_fallback(m, args, nargsf, kwnames);
    }
    return make_binding(m, state, args[0], names);
}

/* -- Binding.__enter__ and Binding.__exit__ ----------------------------------------- */

/* The running Python frame: the one whose with-statement calls __enter__/__exit__,
 * which owns the entry.  Borrowed; it runs, so it lives for this call. */
static PyObject *
running_frame(void)
{
    return (PyObject *)PyEval_GetFrame();
}

static PyObject *
enter(Method *m, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    State *state = get_state(m->module);
    PyObject *self = PyVectorcall_NARGS(nargsf) == 1 ? args[0] : NULL;
    PyObject *owner = running_frame();
    if (self == NULL || kwnames != NULL || owner == NULL ||
        !PyObject_TypeCheck(self, state->binding)) {
        return call_fallback(m, args, nargsf, kwnames);
    }
    /* The slots are read once, and held: the calls below may run Python code, which
     * may assign them. */
    PyObject *var = SLOT(self, state->off_var), *names = SLOT(self, state->off_names);
    PyObject *entries = SLOT(self, state->off_entries);
    PyObject *x = SLOT(self, state->off_xlocal);
    if (var == NULL || names == NULL || entries == NULL || x == NULL ||
        !PyContextVar_CheckExact(var) || !PyDict_CheckExact(names) ||
        !PyDict_CheckExact(entries)) {
        return call_fallback(m, args, nargsf, kwnames);
    }
    Py_INCREF(var);
    Py_INCREF(names);
    Py_INCREF(entries);
    Py_INCREF(x);
    Py_INCREF(owner);
    PyObject *parent = NULL, *frame = NULL, *record = NULL, *token = NULL;
    PyObject *older = NULL, *entry = NULL, *result = NULL;
    if (PyContextVar_Get(var, NULL, &parent) < 0) {
        goto done;
    }
    if (parent == NULL || !PyDict_CheckExact(parent)) {
        result = call_fallback(m, args, nargsf, kwnames);
        goto done;
    }
    frame = PyDict_Copy(parent);
    if (frame == NULL || PyDict_Update(frame, names) < 0) {
        goto done;
    }
    record = PyTuple_Pack(2, names, parent);
    if (record == NULL || PyDict_SetItem(frame, state->entry, record) < 0) {
        goto done;
    }
    token = var_set(var, frame);
    if (token == NULL) {
        goto done;
    }
    older = PyDict_GetItemWithError(entries, owner);
    Py_XINCREF(older);
    if (older == NULL && PyErr_Occurred()) {
        goto undo;
    }
    entry = PyTuple_Pack(3, record, token, older == NULL ? Py_None : older);
    if (entry == NULL || PyDict_SetItem(entries, owner, entry) < 0) {
        goto undo;
    }
    result = Py_NewRef(x);
    goto done;
undo:
    /* As the pure core: nothing is left bound that no exit could find. */
    {
        PyObject *type, *value, *tb;
        PyErr_Fetch(&type, &value, &tb);
        if (var_reset(var, token) < 0) {
            PyErr_Clear();
        }
        PyErr_Restore(type, value, tb);
    }
done:
    Py_XDECREF(entry);
    Py_XDECREF(older);
    Py_XDECREF(token);
    Py_XDECREF(record);
    Py_XDECREF(frame);
    Py_XDECREF(parent);
    Py_DECREF(owner);
    Py_DECREF(x);
    Py_DECREF(entries);
    Py_DECREF(names);
    Py_DECREF(var);
    return result;
}

/* The innermost entry's exit, when *mine* is it: 1 done, 0 not the case, -1 error. */
static int
exit_innermost(State *state, PyObject *self, PyObject *var, PyObject *mine)
{
    if (!PyTuple_CheckExact(mine) || PyTuple_GET_SIZE(mine) != 3 ||
        PyTuple_GET_ITEM(mine, 2) != Py_None) {
        return 0;
    }
    PyObject *record = PyTuple_GET_ITEM(mine, 0), *token = PyTuple_GET_ITEM(mine, 1);
    PyObject *top, *active;
    if (PyContextVar_Get(var, NULL, &top) < 0) {
        return -1;
    }
    if (top == NULL) {
        return 0;
    }
    /* As the pure core's `var.get()[_ENTRY]`. */
    active = PyObject_GetItem(top, state->entry);
    Py_DECREF(top);
    if (active == NULL) {
        return -1;
    }
    Py_DECREF(active); /* compared by identity only; *mine* holds the record */
    if (active != record) {
        return 0;
    }
    if (var_reset(var, token) == 0) {
        return 1;
    }
    if (!PyErr_ExceptionMatches(PyExc_ValueError) &&
        !PyErr_ExceptionMatches(PyExc_RuntimeError)) {
        return -1;
    }
    /* Refused: the pure core tries again and reports it. */
    PyErr_Clear();
    PyObject *done =
        PyObject_CallFunctionObjArgs(state->reset_or_refuse, self, record, token, NULL);
    Py_XDECREF(done);
    return done == NULL ? -1 : 1;
}

static PyObject *
exit_(Method *m, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    State *state = get_state(m->module);
    PyObject *self = PyVectorcall_NARGS(nargsf) == 4 ? args[0] : NULL;
    PyObject *owner = running_frame();
    if (self == NULL || kwnames != NULL || owner == NULL ||
        !PyObject_TypeCheck(self, state->binding)) {
        return call_fallback(m, args, nargsf, kwnames);
    }
    PyObject *var = SLOT(self, state->off_var);
    PyObject *entries = SLOT(self, state->off_entries);
    if (var == NULL || entries == NULL || !PyContextVar_CheckExact(var) ||
        !PyDict_CheckExact(entries)) {
        return call_fallback(m, args, nargsf, kwnames);
    }
    Py_INCREF(var);
    Py_INCREF(entries);
    Py_INCREF(owner);
    PyObject *result = NULL;
    PyObject *mine = PyDict_GetItemWithError(entries, owner);
    Py_XINCREF(mine);
    if (mine == NULL) {
        if (PyErr_Occurred()) {
            goto done;
        }
    }
    else if (PyDict_DelItem(entries, owner) < 0) {
        goto done;
    }
    int exited = mine == NULL ? 0 : exit_innermost(state, self, var, mine);
    if (exited < 0) {
        goto done;
    }
    if (exited) {
        result = Py_NewRef(Py_None);
        goto done;
    }
    result = PyObject_CallFunctionObjArgs(state->exit_rest, self, owner,
                                          mine == NULL ? Py_None : mine, NULL);
done:
    Py_XDECREF(mine);
    Py_DECREF(owner);
    Py_DECREF(entries);
    Py_DECREF(var);
    return result;
}

/* -- carrying bindings: spawn.capture() and spawn.wrap(func) --------------------------
 *
 * capture() copies the current context and keeps it whole when it holds only xlocal's
 * own variables (spawn._carried says which values are); otherwise the pure capture
 * builds the context of those alone.  wrap(func) of a plain function makes a Wrapped:
 * each call runs the function in a fresh copy of the captured context, as the pure
 * wrapper made by functools.update_wrapper does, and hands what it returns to
 * _steps.steps_in when that is a generator, coroutine or other lazy awaitable. */

/* Whether every variable of *context* holds xlocal's own state: 1, 0, -1 with an
 * exception.  The checks may run Python code (a bound name's __eq__, _carried): the
 * context is held by the caller and never changes. */
static int
holds_only_carried(Method *m, PyObject *context)
{
    PyObject *iterator = PyObject_GetIter(context), *var;
    if (iterator == NULL) {
        return -1;
    }
    int only = 1;
    while (only == 1 && (var = PyIter_Next(iterator)) != NULL) {
        PyObject *value = PyObject_GetItem(context, var);
        Py_DECREF(var);
        if (value == NULL) {
            only = -1;
            break;
        }
        if (PyDict_CheckExact(value)) {
            only = PyDict_Contains(value, M_ENTRY(m));
        }
        else {
            PyObject *carried = PyObject_CallOneArg(M_CARRIED(m), value);
            only = carried == NULL ? -1 : PyObject_IsTrue(carried);
            Py_XDECREF(carried);
        }
        Py_DECREF(value);
    }
    Py_DECREF(iterator);
    if (only == 1 && PyErr_Occurred()) {
        return -1;
    }
    return only;
}

/* The current context, copied, if it holds only xlocal's own state; NULL with no
 * exception if it holds more (the pure capture filters it). */
static PyObject *
copy_carried(Method *capture)
{
    PyObject *context = PyContext_CopyCurrent();
    if (context == NULL) {
        return NULL;
    }
    int only = holds_only_carried(capture, context);
    if (only <= 0) {
        Py_DECREF(context);
        return NULL;
    }
    return context;
}

static PyObject *
capture_call(Method *m, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    if (PyVectorcall_NARGS(nargsf) != 0 || kwnames != NULL) {
        return call_fallback(m, args, nargsf, kwnames);
    }
    PyObject *context = copy_carried(m);
    if (context == NULL) {
        return PyErr_Occurred() ? NULL : call_fallback(m, args, nargsf, kwnames);
    }
    PyTypeObject *type = M_SNAPSHOT(m);
    PyObject *snapshot = type->tp_alloc(type, 0);
    if (snapshot == NULL) {
        Py_DECREF(context);
        return NULL;
    }
    SLOT(snapshot, m->offset) = context;
    return snapshot;
}

typedef struct {
    PyObject_HEAD
    vectorcallfunc vectorcall;
    PyObject *weakreflist;
    PyObject *dict;    /* the attributes functools.update_wrapper would copy */
    PyObject *maker;   /* the compiled wrap that made it: lazy, steps_in */
    PyObject *func;    /* the wrapped function, __wrapped__ */
    PyObject *context; /* the captured context; each call runs in a copy */
} Wrapped;

static PyObject *
wrapped_call(Wrapped *w, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    PyObject *context = PyContext_Copy(w->context);
    if (context == NULL) {
        return NULL;
    }
    if (PyContext_Enter(context) < 0) {
        Py_DECREF(context);
        return NULL;
    }
    /* The function and the maker are held by *w*, which the caller holds. */
    PyObject *result = PyObject_Vectorcall(w->func, args, nargsf, kwnames);
    if (PyContext_Exit(context) < 0) {
        Py_CLEAR(result);
    }
    if (result != NULL) {
        /* A value of a builtin type other than the three below is never lazy: the pure
         * wrapper's _steps.lazy(result) gives 0 for it. */
        PyTypeObject *type = Py_TYPE(result);
        if (type == &PyGen_Type || type == &PyCoro_Type || type == &PyAsyncGen_Type ||
            (type->tp_flags & Py_TPFLAGS_HEAPTYPE) || strchr(type->tp_name, '.') != NULL) {
            Method *maker = (Method *)w->maker;
            PyObject *made = PyObject_CallOneArg(M_LAZY(maker), result);
            int later = made == NULL ? -1 : PyObject_IsTrue(made);
            if (later > 0) {
                PyObject *steps = PyObject_CallFunctionObjArgs(M_STEPS_IN(maker), made,
                                                               result, context, NULL);
                Py_SETREF(result, steps);
            }
            else if (later < 0) {
                Py_CLEAR(result);
            }
            Py_XDECREF(made);
        }
    }
    Py_DECREF(context);
    return result;
}

static int
wrapped_traverse(Wrapped *w, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(w));
    Py_VISIT(w->dict);
    Py_VISIT(w->maker);
    Py_VISIT(w->func);
    Py_VISIT(w->context);
    return 0;
}

static int
wrapped_clear(Wrapped *w)
{
    Py_CLEAR(w->dict);
    Py_CLEAR(w->maker);
    Py_CLEAR(w->func);
    Py_CLEAR(w->context);
    return 0;
}

static void
wrapped_dealloc(Wrapped *w)
{
    PyTypeObject *type = Py_TYPE(w);
    PyObject_GC_UnTrack(w);
    if (w->weakreflist != NULL) {
        PyObject_ClearWeakRefs((PyObject *)w);
    }
    wrapped_clear(w);
    type->tp_free((PyObject *)w);
    Py_DECREF(type);
}

/* functools.WRAPPER_ASSIGNMENTS: read from the wrapper's own attributes, else from the
 * function, as if update_wrapper had copied them; never from the wrapper's type. */
static int
is_assigned(PyObject *name)
{
    static const char *const assigned[] = {
        "__module__", "__name__", "__qualname__", "__doc__", "__annotations__",
        "__annotate__", "__type_params__", NULL,
    };
    if (!PyUnicode_Check(name)) {
        return 0;
    }
    for (const char *const *p = assigned; *p != NULL; p++) {
        if (PyUnicode_CompareWithASCIIString(name, *p) == 0) {
            return 1;
        }
    }
    return 0;
}

static PyObject *
wrapped_getattro(PyObject *self, PyObject *name)
{
    Wrapped *w = (Wrapped *)self;
    if (!is_assigned(name)) {
        return PyObject_GenericGetAttr(self, name);
    }
    if (w->dict != NULL) {
        PyObject *own = PyDict_GetItemWithError(w->dict, name);
        if (own != NULL) {
            return Py_NewRef(own);
        }
        if (PyErr_Occurred()) {
            return NULL;
        }
    }
    return PyObject_GetAttr(w->func, name);
}

static PyObject *
wrapped_repr(PyObject *self)
{
    PyObject *name = PyObject_GetAttrString(self, "__qualname__");
    if (name == NULL) {
        return NULL;
    }
    PyObject *shown = PyUnicode_FromFormat("<function %S at %p>", name, self);
    Py_DECREF(name);
    return shown;
}

/* Pickled by reference, as the pure wrapper is: by its qualified name. */
static PyObject *
wrapped_reduce(PyObject *self, PyObject *Py_UNUSED(ignored))
{
    return PyObject_GetAttrString(self, "__qualname__");
}

static PyMethodDef wrapped_methods[] = {
    {"__reduce__", wrapped_reduce, METH_NOARGS,
     "Pickled by reference, by its qualified name, as a function is."},
    {NULL},
};

static PyMemberDef wrapped_members[] = {
    {"__wrapped__", T_OBJECT, offsetof(Wrapped, func), READONLY, "the wrapped function"},
    {"__dictoffset__", T_PYSSIZET, offsetof(Wrapped, dict), READONLY, NULL},
    {"__weaklistoffset__", T_PYSSIZET, offsetof(Wrapped, weakreflist), READONLY, NULL},
    {"__vectorcalloffset__", T_PYSSIZET, offsetof(Wrapped, vectorcall), READONLY, NULL},
    {NULL},
};

static PyGetSetDef wrapped_getset[] = {
    {"__dict__", PyObject_GenericGetDict, PyObject_GenericSetDict, NULL, NULL},
    {NULL},
};

static PyType_Slot wrapped_slots[] = {
    {Py_tp_dealloc, wrapped_dealloc},
    {Py_tp_repr, wrapped_repr},
    {Py_tp_call, PyVectorcall_Call},
    {Py_tp_getattro, wrapped_getattro},
    {Py_tp_traverse, wrapped_traverse},
    {Py_tp_clear, wrapped_clear},
    {Py_tp_methods, wrapped_methods},
    {Py_tp_members, wrapped_members},
    {Py_tp_getset, wrapped_getset},
    {Py_tp_descr_get, method_get},
    {Py_tp_doc, "A function made by xlocal.wrap(): it runs in the bindings captured "
                "when it was made."},
    {0, NULL},
};

static PyType_Spec wrapped_spec = {
    .name = "xlocal._cxlocal.wrapped",
    .basicsize = sizeof(Wrapped),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL |
             Py_TPFLAGS_METHOD_DESCRIPTOR | Py_TPFLAGS_IMMUTABLETYPE |
             Py_TPFLAGS_DISALLOW_INSTANTIATION,
    .slots = wrapped_slots,
};

/* Whether *func* is a plain function whose calls return what they compute: no
 * generator, coroutine or async generator function, and no attributes (which could
 * hold inspect's marks), as _steps.kind tells it at once. */
static int
is_plain_function(PyObject *func)
{
    if (!PyFunction_Check(func) || Py_TYPE(func) != &PyFunction_Type) {
        return 0;
    }
    PyObject *dict = ((PyFunctionObject *)func)->func_dict;
    if (dict != NULL && PyDict_GET_SIZE(dict) != 0) {
        return 0;
    }
    PyCodeObject *code = (PyCodeObject *)PyFunction_GET_CODE(func);
    return !(code->co_flags &
             (CO_GENERATOR | CO_COROUTINE | CO_ITERABLE_COROUTINE | CO_ASYNC_GENERATOR));
}

static PyObject *
wrap_call(Method *m, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    if (PyVectorcall_NARGS(nargsf) != 1 || kwnames != NULL || !is_plain_function(args[0])) {
        return call_fallback(m, args, nargsf, kwnames);
    }
    PyObject *func = args[0];
    PyObject *context = copy_carried(M_CAPTURE(m));
    if (context == NULL) {
        return PyErr_Occurred() ? NULL : call_fallback(m, args, nargsf, kwnames);
    }
    State *state = get_state(m->module);
    Wrapped *w = PyObject_GC_New(Wrapped, state->wrapped_type);
    if (w == NULL) {
        Py_DECREF(context);
        return NULL;
    }
    w->vectorcall = (vectorcallfunc)wrapped_call;
    w->weakreflist = NULL;
    w->dict = NULL;
    w->maker = Py_NewRef((PyObject *)m);
    w->func = Py_NewRef(func);
    w->context = context;
    PyObject_GC_Track(w);
    return (PyObject *)w;
}

/* -- the slots of each xlocal's own class: reads and calls without a method lookup --
 *
 * attach() gives the class a module object of its own, in the type's ht_module
 * (otherwise unused by classes made by a class statement or type()): its state holds
 * the class's compiled __getattribute__ and __call__.  A subclass of that class, which
 * inherits the slots, finds them in its base. */

typedef struct {
    PyObject *reader; /* a Method: read_attr */
    PyObject *binder; /* a Method: bind */
} Attached;

static int
attached_traverse(PyObject *module, visitproc visit, void *arg)
{
    Attached *a = (Attached *)PyModule_GetState(module);
    if (a != NULL) {
        Py_VISIT(a->reader);
        Py_VISIT(a->binder);
    }
    return 0;
}

static int
attached_clear(PyObject *module)
{
    Attached *a = (Attached *)PyModule_GetState(module);
    if (a != NULL) {
        Py_CLEAR(a->reader);
        Py_CLEAR(a->binder);
    }
    return 0;
}

static void
attached_free(void *module)
{
    attached_clear((PyObject *)module);
}

static struct PyModuleDef attached_def = {
    PyModuleDef_HEAD_INIT,
    .m_name = "xlocal._cxlocal.attached",
    .m_doc = "The compiled read and call of one xlocal's own class.",
    .m_size = sizeof(Attached),
    .m_traverse = attached_traverse,
    .m_clear = attached_clear,
    .m_free = attached_free,
};

/* The attached functions of *type* or of its nearest base that has them, borrowed (the
 * type holds them, and the type is held by an instance the caller holds); NULL if
 * none has (no exception). */
static Attached *
attached_of(PyTypeObject *type)
{
    for (; type != NULL; type = type->tp_base) {
        if (type->tp_flags & Py_TPFLAGS_HEAPTYPE) {
            PyObject *module = ((PyHeapTypeObject *)type)->ht_module;
            if (module != NULL && PyModule_Check(module) &&
                PyModule_GetDef(module) == &attached_def) {
                return (Attached *)PyModule_GetState(module);
            }
        }
    }
    return NULL;
}

static PyObject *
fast_getattro(PyObject *self, PyObject *attr)
{
    Attached *a = attached_of(Py_TYPE(self));
    if (a == NULL) {
        return PyObject_GenericGetAttr(self, attr);
    }
    Method *m = (Method *)a->reader;
    if (PyUnicode_CheckExact(attr)) {
        PyObject *value = read_value(m, self, attr);
        if (value != NULL || PyErr_Occurred()) {
            return value;
        }
    }
    PyObject *args[2] = {self, attr};
    return PyObject_Vectorcall(m->fallback, args, 2, NULL);
}

static PyObject *
fast_call(PyObject *self, PyObject *args, PyObject *kwds)
{
    Attached *a = attached_of(Py_TYPE(self));
    if (a == NULL) {
        return PyErr_Format(PyExc_TypeError, "'%.200s' object is not callable",
                            Py_TYPE(self)->tp_name);
    }
    Method *m = (Method *)a->binder;
    int simple = PyTuple_GET_SIZE(args) == 0 && (kwds == NULL || PyDict_CheckExact(kwds));
    if (simple && kwds != NULL) {
        Py_ssize_t pos = 0;
        PyObject *key, *value;
        while (simple && PyDict_Next(kwds, &pos, &key, &value)) {
            simple = PyUnicode_CheckExact(key);
        }
    }
    if (simple) {
        State *state = get_state(m->module);
        PyObject *names = kwds == NULL ? PyDict_New() : PyDict_Copy(kwds);
        if (names == NULL) {
            return NULL;
        }
        int valid = all_known_valid(m, state, names);
        if (valid > 0) {
            return make_binding(m, state, self, names);
        }
        Py_DECREF(names);
        if (valid < 0) {
            return NULL;
        }
    }
    /* Anything else: the pure __call__, with self first, as Python's own slot. */
    Py_ssize_t n = PyTuple_GET_SIZE(args);
    PyObject *full = PyTuple_New(n + 1);
    if (full == NULL) {
        return NULL;
    }
    PyTuple_SET_ITEM(full, 0, Py_NewRef(self));
    for (Py_ssize_t i = 0; i < n; i++) {
        PyTuple_SET_ITEM(full, i + 1, Py_NewRef(PyTuple_GET_ITEM(args, i)));
    }
    PyObject *result = PyObject_Call(m->fallback, full, kwds);
    Py_DECREF(full);
    return result;
}

/* -- the module ------------------------------------------------------------------- */

static int
is_open(PyObject *set)
{
    /* None or an empty set: nothing to look up. */
    return set == Py_None || (PyAnySet_Check(set) && PySet_GET_SIZE(set) == 0);
}

static PyObject *
make_namespace_method(PyObject *module, PyObject *args, const char *format,
                      vectorcallfunc call)
{
    PyObject *fallback, *var, *own, *declared;
    if (!PyArg_ParseTuple(args, format, &fallback, &var, &own, &declared)) {
        return NULL;
    }
    if (get_state(module)->binding == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "install() must be called first");
        return NULL;
    }
    if (!PyCallable_Check(fallback) || !PyContextVar_CheckExact(var) ||
        !(own == Py_None || PyAnySet_CheckExact(own)) ||
        !(declared == Py_None || PyAnySet_CheckExact(declared))) {
        PyErr_SetString(PyExc_TypeError,
                        "takes a function, a ContextVar and two sets or None");
        return NULL;
    }
    return make_method(module, call, fallback, var, is_open(own) ? NULL : own,
                       declared == Py_None ? NULL : declared);
}

static PyObject *
mod_reader(PyObject *module, PyObject *args)
{
    return make_namespace_method(module, args, "OOOO:reader", (vectorcallfunc)read_attr);
}

static PyObject *
mod_binder(PyObject *module, PyObject *args)
{
    return make_namespace_method(module, args, "OOOO:binder", (vectorcallfunc)bind);
}

/* The compiled method of this module named *name* in *type*'s own dict, borrowed. */
static PyObject *
own_method(PyObject *module, PyTypeObject *type, const char *name, vectorcallfunc call)
{
    PyObject *found = PyDict_GetItemString(type->tp_dict, name);
    if (found == NULL || Py_TYPE(found) != get_state(module)->method_type ||
        ((Method *)found)->vectorcall != call || ((Method *)found)->module != module) {
        PyErr_Format(PyExc_TypeError, "attach() needs the compiled %s of this module",
                     name);
        return NULL;
    }
    return found;
}

static PyObject *
mod_attach(PyObject *module, PyObject *cls)
{
    State *state = get_state(module);
    if (state->xlocal == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "attach() needs install() first");
        return NULL;
    }
    if (!PyType_Check(cls) || !PyType_IsSubtype((PyTypeObject *)cls, state->xlocal) ||
        !(((PyTypeObject *)cls)->tp_flags & Py_TPFLAGS_HEAPTYPE)) {
        PyErr_SetString(PyExc_TypeError, "attach() takes the class of one xlocal");
        return NULL;
    }
    PyHeapTypeObject *type = (PyHeapTypeObject *)cls;
    if (type->ht_module != NULL) {
        PyErr_SetString(PyExc_TypeError, "attach(): this class is attached already");
        return NULL;
    }
    PyObject *reader = own_method(module, (PyTypeObject *)cls, "__getattribute__",
                                  (vectorcallfunc)read_attr);
    PyObject *binder = own_method(module, (PyTypeObject *)cls, "__call__",
                                  (vectorcallfunc)bind);
    if (reader == NULL || binder == NULL) {
        return NULL;
    }
    /* A class with __getattr__ keeps Python's slot, which calls it on a miss. */
    PyObject *getattr = _PyType_Lookup((PyTypeObject *)cls, state->str_getattr);
    PyObject *attached = PyModule_Create(&attached_def);
    if (attached == NULL) {
        return NULL;
    }
    Attached *a = (Attached *)PyModule_GetState(attached);
    a->reader = Py_NewRef(reader);
    a->binder = Py_NewRef(binder);
    type->ht_module = attached;
    if (getattr == NULL) {
        type->ht_type.tp_getattro = fast_getattro;
    }
    type->ht_type.tp_call = fast_call;
    PyType_Modified((PyTypeObject *)cls);
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
    PyObject *xtype, *binding, *entry, *valid, *rest, *reset, *unbound, *undeclared,
        *py_enter, *py_exit;
    State *state = get_state(module);
    if (!PyArg_ParseTuple(args, "O!O!OO!OOOOOO:install", &PyType_Type, &xtype,
                          &PyType_Type, &binding, &entry, &PySet_Type, &valid, &rest,
                          &reset, &unbound, &undeclared, &py_enter, &py_exit)) {
        return NULL;
    }
    if (state->binding != NULL) {
        PyErr_SetString(PyExc_RuntimeError, "install() was called already");
        return NULL;
    }
    PyTypeObject *type = (PyTypeObject *)binding;
    Py_ssize_t entries = slot_offset(type, "_entries"), names = slot_offset(type, "_names"),
               var = slot_offset(type, "_var"), x = slot_offset(type, "_xlocal");
    if (entries < 0 || names < 0 || var < 0 || x < 0) {
        return NULL;
    }
    PyObject *c_enter = make_method(module, (vectorcallfunc)enter, py_enter, NULL, NULL,
                                    NULL);
    PyObject *c_exit = make_method(module, (vectorcallfunc)exit_, py_exit, NULL, NULL,
                                   NULL);
    if (c_enter == NULL || c_exit == NULL) {
        Py_XDECREF(c_enter);
        Py_XDECREF(c_exit);
        return NULL;
    }
    state->off_entries = entries;
    state->off_names = names;
    state->off_var = var;
    state->off_xlocal = x;
    state->binding = (PyTypeObject *)Py_NewRef(binding);
    state->xlocal = (PyTypeObject *)Py_NewRef(xtype);
    state->entry = Py_NewRef(entry);
    state->valid_names = Py_NewRef(valid);
    state->exit_rest = Py_NewRef(rest);
    state->reset_or_refuse = Py_NewRef(reset);
    state->unbound = Py_NewRef(unbound);
    state->undeclared = Py_NewRef(undeclared);
    return Py_BuildValue("(NN)", c_enter, c_exit);
}

static PyObject *
mod_capturer(PyObject *module, PyObject *args)
{
    PyObject *fallback, *snapshot, *carried, *entry;
    if (!PyArg_ParseTuple(args, "OO!OO:capturer", &fallback, &PyType_Type, &snapshot,
                          &carried, &entry)) {
        return NULL;
    }
    Py_ssize_t offset = slot_offset((PyTypeObject *)snapshot, "_context");
    if (offset < 0) {
        return NULL;
    }
    if (!PyCallable_Check(fallback) || !PyCallable_Check(carried)) {
        PyErr_SetString(PyExc_TypeError, "capturer() takes two functions");
        return NULL;
    }
    PyObject *made = make_method(module, (vectorcallfunc)capture_call, fallback,
                                 snapshot, carried, entry);
    if (made != NULL) {
        ((Method *)made)->offset = offset;
    }
    return made;
}

static PyObject *
mod_wrapper(PyObject *module, PyObject *args)
{
    PyObject *fallback, *capture, *lazy, *steps_in;
    if (!PyArg_ParseTuple(args, "OOOO:wrapper", &fallback, &capture, &lazy, &steps_in)) {
        return NULL;
    }
    if (Py_TYPE(capture) != get_state(module)->method_type ||
        ((Method *)capture)->vectorcall != (vectorcallfunc)capture_call) {
        PyErr_SetString(PyExc_TypeError, "wrapper() takes the compiled capture");
        return NULL;
    }
    return make_method(module, (vectorcallfunc)wrap_call, fallback, capture, lazy,
                       steps_in);
}

static PyObject *
mod_set(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2 || !PyContextVar_CheckExact(args[0])) {
        PyErr_SetString(PyExc_TypeError, "set(var, value) takes a ContextVar and a value");
        return NULL;
    }
    return var_set(args[0], args[1]);
}

static PyObject *
mod_reset(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2 || !PyContextVar_CheckExact(args[0])) {
        PyErr_SetString(PyExc_TypeError, "reset(var, token) takes a ContextVar and a Token");
        return NULL;
    }
    if (var_reset(args[0], args[1]) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyMethodDef module_methods[] = {
    {"install", mod_install, METH_VARARGS,
     "install(xlocal, Binding, ENTRY, valid_names, exit_rest, reset_or_refuse, "
     "UnboundError, UndeclaredError, enter, exit) -> (enter, exit)\n\n"
     "Take the pure core's objects, once; return compiled __enter__ and __exit__."},
    {"reader", mod_reader, METH_VARARGS,
     "reader(read, var, own, declared): the compiled __getattribute__ of an xlocal."},
    {"binder", mod_binder, METH_VARARGS,
     "binder(bind, var, own, declared): the compiled __call__ of an xlocal."},
    {"attach", mod_attach, METH_O,
     "attach(cls): give the class of one xlocal the compiled read and call slots."},
    {"capturer", mod_capturer, METH_VARARGS,
     "capturer(capture, Snapshot, carried, ENTRY): the compiled spawn.capture()."},
    {"wrapper", mod_wrapper, METH_VARARGS,
     "wrapper(wrap, capture, lazy, steps_in): the compiled spawn.wrap(func)."},
    {"set", (PyCFunction)(void (*)(void))mod_set, METH_FASTCALL,
     "set(var, value) -> Token: var.set(value), with the collector held off where "
     "CPython needs it (3.10, 3.11)."},
    {"reset", (PyCFunction)(void (*)(void))mod_reset, METH_FASTCALL,
     "reset(var, token): var.reset(token), with the collector held off where CPython "
     "needs it (3.10, 3.11)."},
    {NULL, NULL, 0, NULL},
};

static int
module_exec(PyObject *module)
{
    State *state = get_state(module);
    /* The definition of attach()'s module objects is made ready here, by the first
     * import, not by a first attach() that may come later from any thread. */
    if (PyModuleDef_Init(&attached_def) == NULL) {
        return -1;
    }
    state->method_type =
        (PyTypeObject *)PyType_FromModuleAndSpec(module, &method_spec, NULL);
    if (state->method_type == NULL) {
        return -1;
    }
    state->wrapped_type =
        (PyTypeObject *)PyType_FromModuleAndSpec(module, &wrapped_spec, NULL);
    if (state->wrapped_type == NULL) {
        return -1;
    }
    state->str_getattr = PyUnicode_InternFromString("__getattr__");
    if (state->str_getattr == NULL) {
        return -1;
    }
    return PyModule_AddIntConstant(module, "HOLDS_COLLECTOR_OFF", HOLD_GC_OFF);
}

static int
module_traverse(PyObject *module, visitproc visit, void *arg)
{
    State *state = get_state(module);
    Py_VISIT(state->method_type);
    Py_VISIT(state->wrapped_type);
    Py_VISIT(state->entry);
    Py_VISIT(state->binding);
    Py_VISIT(state->xlocal);
    Py_VISIT(state->valid_names);
    Py_VISIT(state->exit_rest);
    Py_VISIT(state->reset_or_refuse);
    Py_VISIT(state->unbound);
    Py_VISIT(state->undeclared);
    Py_VISIT(state->str_getattr);
    return 0;
}

static int
module_clear(PyObject *module)
{
    State *state = get_state(module);
    Py_CLEAR(state->method_type);
    Py_CLEAR(state->wrapped_type);
    Py_CLEAR(state->entry);
    Py_CLEAR(state->binding);
    Py_CLEAR(state->xlocal);
    Py_CLEAR(state->valid_names);
    Py_CLEAR(state->exit_rest);
    Py_CLEAR(state->reset_or_refuse);
    Py_CLEAR(state->unbound);
    Py_CLEAR(state->undeclared);
    Py_CLEAR(state->str_getattr);
    return 0;
}

static void
module_free(void *module)
{
    module_clear((PyObject *)module);
}

static PyModuleDef_Slot module_slots[] = {
    {Py_mod_exec, module_exec},
#ifdef Py_mod_multiple_interpreters
    /* Every object lives in the module's state; attached_def, the one static, is
     * made ready by the main interpreter's import and never changed after. */
    {Py_mod_multiple_interpreters, Py_MOD_PER_INTERPRETER_GIL_SUPPORTED},
#endif
#ifdef Py_mod_gil
    /* Not yet proven safe without the GIL: setup.py does not build this module for
     * free-threaded interpreters. */
    {Py_mod_gil, Py_MOD_GIL_USED},
#endif
    {0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT,
    .m_name = "xlocal._cxlocal",
    .m_doc = "The compiled fast path of xlocal's core; the pure core (xlocal/_core.py "
             "and the rooms it imports) is its specification and fallback.",
    .m_size = sizeof(State),
    .m_methods = module_methods,
    .m_slots = module_slots,
    .m_traverse = module_traverse,
    .m_clear = module_clear,
    .m_free = module_free,
};

PyMODINIT_FUNC
PyInit__cxlocal(void)
{
    return PyModuleDef_Init(&module_def);
}

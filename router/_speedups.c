/* router._speedups: the per-request arithmetic of a client key with limits and budgets, compiled.
 *
 * The same functions as router/limit_cells.py (rpm and tpm cells, concurrency slots),
 * router/budget_cells.py (the budget check and charge), router/limit_headers.py (the OpenAI
 * rate-limit headers) and router/token_estimate.py (the estimate of a plain-text request), with the
 * same results to the last bit: every float operation is the one the Python code does, in the same
 * order, and tests/test_speedups.py checks both against each other on random sequences. What this
 * module does not read exactly (values past a long long, other types) it hands to the Python. The
 * Python modules are the reference and the fallback: this extension is optional (a build without a
 * C compiler skips it) and ROUTER_NO_EXTENSIONS=1 turns it off (router/speedups.py).
 *
 * Measured under callgrind: admission, headers, release and tpm correction of a key with six limit
 * cells, 34k instructions per request in Python, 17k with this module (the rest is the Python
 * around it); bench/instructions.py --keys, a key with limits and budgets against auth off: 1.094x
 * before, 1.055x with it.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <math.h>
#include <string.h>

#define PERIOD_S 60.0 /* rpm and tpm: per minute (router.limit_cells.PERIOD_S) */
#define EXACT_LIMIT 9007199254740992.0 /* 2**53: the milliseconds go_duration formats here */

/* ---- Counter: one cell's counters (router.limit_cells.Counter) ------------------------------ */

typedef struct {
    PyObject_HEAD
    double tat;          /* GCRA theoretical arrival time, monotonic seconds (rpm, tpm) */
    Py_ssize_t inflight; /* requests in flight (concurrency) */
} CounterObject;

static PyMemberDef counter_members[] = {
    {"tat", T_DOUBLE, offsetof(CounterObject, tat), 0, "the GCRA theoretical arrival time (rpm, tpm)"},
    {"inflight", T_PYSSIZET, offsetof(CounterObject, inflight), 0, "requests in flight (concurrency)"},
    {NULL, 0, 0, 0, NULL},
};

static PyObject *counter_new(PyTypeObject *type, PyObject *args, PyObject *kwds) {
    if (PyTuple_GET_SIZE(args) || (kwds && PyDict_GET_SIZE(kwds))) {
        PyErr_SetString(PyExc_TypeError, "Counter() takes no arguments");
        return NULL;
    }
    return type->tp_alloc(type, 0); /* zero-filled: tat 0.0, inflight 0 */
}

static PyTypeObject CounterType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "router._speedups.Counter",
    .tp_doc = "One cell's counters in this process: its GCRA theoretical arrival time (rpm, tpm) or "
              "its requests in flight (concurrency).",
    .tp_basicsize = sizeof(CounterObject),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = counter_new,
    .tp_members = counter_members,
};

/* ---- reading the bound plans' tuples ------------------------------------------------------- */

static int tuple_of(PyObject *o, Py_ssize_t size, const char *what) {
    if (!PyTuple_Check(o) || PyTuple_GET_SIZE(o) < size) {
        PyErr_Format(PyExc_TypeError, "%s must be a tuple of at least %zd items", what, size);
        return -1;
    }
    return 0;
}

/* The Python reference's function ``name`` of ``module`` called with these arguments: what this
 * module hands over (values outside its exact range, types it does not read). */
static PyObject *python_call(const char *module, const char *name, PyObject *const *args, Py_ssize_t nargs) {
    PyObject *mod = PyImport_ImportModule(module);
    if (mod == NULL)
        return NULL;
    PyObject *fn = PyObject_GetAttrString(mod, name);
    Py_DECREF(mod);
    if (fn == NULL)
        return NULL;
    PyObject *res = PyObject_Vectorcall(fn, args, (size_t)nargs, NULL);
    Py_DECREF(fn);
    return res;
}

/* An exact int that fits a long long: 0 and *out set; 1 for any other value (the caller hands the
 * call to Python, whose ints have no range). Nothing here runs Python code. */
static int small_int(PyObject *o, long long *out) {
    if (!PyLong_CheckExact(o))
        return 1;
    int overflow = 0;
    long long v = PyLong_AsLongLongAndOverflow(o, &overflow);
    if (overflow)
        return 1;
    *out = v;
    return 0;
}

/* ---- GCRA: take rpm and tpm (router.limit_cells.take) --------------------------------------- */

/* What one request adds to a rate cell's TAT: one interval for rpm (or a request of at most one
 * token), else its tokens (at most the whole limit) times the interval. */
static inline double increment(int rpm, long long tokens, long long limit, double interval) {
    if (rpm || tokens <= 1)
        return interval;
    return (double)(tokens <= limit ? tokens : limit) * interval;
}

typedef struct {
    PyObject *limit; /* borrowed: the cell's limit, as given */
    double remaining; /* already truncated toward zero, as int() does */
    double used;
    int set;
} Span;

static PyObject *span_tuple(const Span *s) {
    if (!s->set)
        Py_RETURN_NONE;
    PyObject *remaining = PyLong_FromDouble(s->remaining);
    PyObject *used = remaining ? PyFloat_FromDouble(s->used) : NULL;
    if (used == NULL) {
        Py_XDECREF(remaining);
        return NULL;
    }
    PyObject *t = PyTuple_New(3);
    if (t == NULL) {
        Py_DECREF(remaining);
        Py_DECREF(used);
        return NULL;
    }
    PyTuple_SET_ITEM(t, 0, Py_NewRef(s->limit));
    PyTuple_SET_ITEM(t, 1, remaining);
    PyTuple_SET_ITEM(t, 2, used);
    return t;
}

static PyObject *status_tuple(const Span *requests, const Span *spent) {
    PyObject *a = span_tuple(requests);
    if (a == NULL)
        return NULL;
    PyObject *b = span_tuple(spent);
    if (b == NULL) {
        Py_DECREF(a);
        return NULL;
    }
    PyObject *t = PyTuple_New(2);
    if (t == NULL) {
        Py_DECREF(a);
        Py_DECREF(b);
        return NULL;
    }
    PyTuple_SET_ITEM(t, 0, a);
    PyTuple_SET_ITEM(t, 1, b);
    return t;
}

/* Raise what ``over(cell, wait)`` returns (the Python side's 429), as Python's ``raise`` would. */
static PyObject *raise_over(PyObject *over, PyObject *cell, double wait) {
    PyObject *w = PyFloat_FromDouble(wait);
    if (w == NULL)
        return NULL;
    PyObject *args[2] = {cell, w};
    PyObject *err = PyObject_Vectorcall(over, args, 2, NULL);
    Py_DECREF(w);
    if (err == NULL)
        return NULL;
    if (PyExceptionInstance_Check(err))
        PyErr_SetObject((PyObject *)Py_TYPE(err), err);
    else if (PyExceptionClass_Check(err))
        PyErr_SetNone(err);
    else
        PyErr_SetString(PyExc_TypeError, "exceptions must derive from BaseException");
    Py_DECREF(err);
    return NULL;
}

typedef struct {
    CounterObject *counter;
    double interval;
    int rpm;
    long long limit;
    PyObject *limit_obj;
    PyObject *cell;
} Rate;

/* Every rate cell checked before any is taken: 0 when each is (Counter, float, bool, an int that fits,
 * cell) as router.limits.Bound builds them; 1 when a limit is past a long long (Python's); -1 and a
 * TypeError for anything else. The pass that follows reads them without a call that could fail. */
static int check_rates(PyObject *rates) {
    if (!PyTuple_Check(rates)) {
        PyErr_SetString(PyExc_TypeError, "the rate cells must be a tuple");
        return -1;
    }
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(rates); i++) {
        PyObject *item = PyTuple_GET_ITEM(rates, i);
        long long limit;
        if (!PyTuple_Check(item) || PyTuple_GET_SIZE(item) < 5 || !Py_IS_TYPE(PyTuple_GET_ITEM(item, 0), &CounterType)
            || !PyFloat_CheckExact(PyTuple_GET_ITEM(item, 1)) || !PyBool_Check(PyTuple_GET_ITEM(item, 2))
            || !PyLong_CheckExact(PyTuple_GET_ITEM(item, 3))) {
            PyErr_SetString(PyExc_TypeError, "a rate cell must be (Counter, float, bool, int, cell)");
            return -1;
        }
        if (small_int(PyTuple_GET_ITEM(item, 3), &limit))
            return 1;
    }
    return 0;
}

static inline void rate_of(PyObject *item, Rate *r) { /* an item check_rates passed */
    r->counter = (CounterObject *)PyTuple_GET_ITEM(item, 0);
    r->interval = PyFloat_AS_DOUBLE(PyTuple_GET_ITEM(item, 1));
    r->rpm = PyTuple_GET_ITEM(item, 2) == Py_True;
    r->limit_obj = PyTuple_GET_ITEM(item, 3);
    r->limit = PyLong_AsLongLong(r->limit_obj);
    r->cell = PyTuple_GET_ITEM(item, 4);
}

static PyObject *take_rates(PyObject *rates, long long tokens, double now, PyObject *over) {
    Span requests = {0}, spent = {0};
    double latest = now;
    PyObject *worst = NULL;
    int have_worst = 0;
    Py_ssize_t n = PyTuple_GET_SIZE(rates);
    Rate r;
    for (Py_ssize_t i = 0; i < n; i++) { /* one pass, committed at once (undone on a 429) */
        rate_of(PyTuple_GET_ITEM(rates, i), &r);
        double tat = r.counter->tat;
        if (tat < now)
            tat = now;
        tat += increment(r.rpm, tokens, r.limit, r.interval);
        r.counter->tat = tat;
        double used = tat - now;
        if (used > PERIOD_S) { /* over: it fits again once its TAT is a period away */
            if (tat > latest) {
                latest = tat;
                worst = r.cell;
                have_worst = 1;
            }
            continue;
        }
        double remaining = trunc((PERIOD_S - used) / r.interval);
        Span *s = r.rpm ? &requests : &spent;
        if (!s->set || remaining < s->remaining) {
            s->limit = r.limit_obj;
            s->remaining = remaining;
            s->used = used;
            s->set = 1;
        }
    }
    if (!have_worst)
        return status_tuple(&requests, &spent);
    for (Py_ssize_t i = 0; i < n; i++) {
        rate_of(PyTuple_GET_ITEM(rates, i), &r);
        r.counter->tat -= increment(r.rpm, tokens, r.limit, r.interval);
    }
    return raise_over(over, worst, latest - PERIOD_S - now); /* the rates tuple keeps worst alive */
}

/* tokens and now as this module reads them: 0; 1 when the call is Python's (a value it does not read) */
static int take_args(PyObject *tokens_obj, PyObject *now_obj, long long *tokens, double *now) {
    if (small_int(tokens_obj, tokens) || !PyFloat_CheckExact(now_obj))
        return 1;
    *now = PyFloat_AS_DOUBLE(now_obj);
    return 0;
}

/* take(rates, tokens, now, over) -> (requests, tokens) */
static PyObject *sp_take(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    long long tokens;
    double now;
    if (nargs != 4) {
        PyErr_SetString(PyExc_TypeError, "take(rates, tokens, now, over)");
        return NULL;
    }
    int rc = check_rates(args[0]);
    if (rc < 0)
        return NULL;
    if (rc > 0 || take_args(args[1], args[2], &tokens, &now))
        return python_call("router.limit_cells", "take", args, nargs);
    return take_rates(args[0], tokens, now, args[3]);
}

/* ---- concurrency slots (router.limit_cells.admit, release) --------------------------------- */

/* Every concurrency cell checked before any is taken: (Counter, an int that fits, cell); 1 when a
 * limit is past a long long (Python's); -1 and a TypeError for anything else. */
static int check_slots(PyObject *slots) {
    if (!PyTuple_Check(slots)) {
        PyErr_SetString(PyExc_TypeError, "the concurrency cells must be a tuple");
        return -1;
    }
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(slots); i++) {
        PyObject *item = PyTuple_GET_ITEM(slots, i);
        long long limit;
        if (!PyTuple_Check(item) || PyTuple_GET_SIZE(item) < 3 || !Py_IS_TYPE(PyTuple_GET_ITEM(item, 0), &CounterType)
            || !PyLong_CheckExact(PyTuple_GET_ITEM(item, 1))) {
            PyErr_SetString(PyExc_TypeError, "a concurrency cell must be (Counter, int, cell)");
            return -1;
        }
        if (small_int(PyTuple_GET_ITEM(item, 1), &limit))
            return 1;
    }
    return 0;
}

/* admit(slots, rates, tokens, now, over) -> (requests, tokens): the slots checked, the rates taken
 * (all or none), then the slots taken: a 429 has nothing to give back. */
static PyObject *sp_admit(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    long long tokens;
    double now;
    if (nargs != 5) {
        PyErr_SetString(PyExc_TypeError, "admit(slots, rates, tokens, now, over)");
        return NULL;
    }
    PyObject *slots = args[0];
    int rc = check_slots(slots);
    if (rc == 0)
        rc = check_rates(args[1]);
    if (rc < 0)
        return NULL;
    if (rc > 0 || take_args(args[2], args[3], &tokens, &now))
        return python_call("router.limit_cells", "admit", args, nargs);
    Py_ssize_t n = PyTuple_GET_SIZE(slots);
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *item = PyTuple_GET_ITEM(slots, i);
        CounterObject *counter = (CounterObject *)PyTuple_GET_ITEM(item, 0);
        if ((long long)counter->inflight >= PyLong_AsLongLong(PyTuple_GET_ITEM(item, 1)))
            return raise_over(args[4], PyTuple_GET_ITEM(item, 2), 1.0);
    }
    PyObject *status = take_rates(args[1], tokens, now, args[4]);
    if (status == NULL)
        return NULL;
    for (Py_ssize_t i = 0; i < n; i++)
        ((CounterObject *)PyTuple_GET_ITEM(PyTuple_GET_ITEM(slots, i), 0))->inflight += 1;
    return status;
}

/* release(slots): free one slot of each concurrency cell (never below zero) */
static PyObject *sp_release(PyObject *module, PyObject *slots) {
    if (!PyTuple_Check(slots)) {
        PyErr_SetString(PyExc_TypeError, "release(): the concurrency cells must be a tuple");
        return NULL;
    }
    Py_ssize_t n = PyTuple_GET_SIZE(slots);
    for (Py_ssize_t i = 0; i < n; i++) { /* checked first: nothing is released from a malformed tuple */
        PyObject *item = PyTuple_GET_ITEM(slots, i);
        if (!PyTuple_Check(item) || PyTuple_GET_SIZE(item) < 1 || !Py_IS_TYPE(PyTuple_GET_ITEM(item, 0), &CounterType)) {
            PyErr_SetString(PyExc_TypeError, "a concurrency cell must be (Counter, int, cell)");
            return NULL;
        }
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        CounterObject *counter = (CounterObject *)PyTuple_GET_ITEM(PyTuple_GET_ITEM(slots, i), 0);
        if (counter->inflight > 0)
            counter->inflight -= 1;
    }
    Py_RETURN_NONE;
}

/* adjust(tpm, delta, now): correct each tpm cell by delta tokens (charged past the burst, given
 * back never below now) */
static PyObject *sp_adjust(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 3 || !PyTuple_Check(args[0])) {
        PyErr_SetString(PyExc_TypeError, "adjust(tpm: tuple, delta, now)");
        return NULL;
    }
    Py_ssize_t n = PyTuple_GET_SIZE(args[0]);
    if (n == 0)
        Py_RETURN_NONE;
    if (!PyLong_CheckExact(args[1]) || !PyFloat_CheckExact(args[2]))
        return python_call("router.limit_cells", "adjust", args, nargs);
    for (Py_ssize_t i = 0; i < n; i++) { /* checked first: nothing is corrected from a malformed tuple */
        PyObject *item = PyTuple_GET_ITEM(args[0], i);
        if (!PyTuple_Check(item) || PyTuple_GET_SIZE(item) < 2 || !Py_IS_TYPE(PyTuple_GET_ITEM(item, 0), &CounterType)
            || !PyFloat_CheckExact(PyTuple_GET_ITEM(item, 1))) {
            PyErr_SetString(PyExc_TypeError, "a tpm cell must be (Counter, float)");
            return NULL;
        }
    }
    double delta = PyLong_AsDouble(args[1]); /* what int * float converts: OverflowError past a double */
    if (delta == -1.0 && PyErr_Occurred())
        return NULL;
    double now = PyFloat_AS_DOUBLE(args[2]);
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *item = PyTuple_GET_ITEM(args[0], i);
        CounterObject *counter = (CounterObject *)PyTuple_GET_ITEM(item, 0);
        double tat = counter->tat;
        if (tat < now)
            tat = now;
        tat += delta * PyFloat_AS_DOUBLE(PyTuple_GET_ITEM(item, 1));
        counter->tat = tat > now ? tat : now;
    }
    Py_RETURN_NONE;
}

/* settle(slots, tpm, delta, now): release(slots), then adjust(tpm, delta, now) when delta is true */
static PyObject *sp_settle(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 4) {
        PyErr_SetString(PyExc_TypeError, "settle(slots, tpm, delta, now)");
        return NULL;
    }
    PyObject *done = sp_release(module, args[0]);
    if (done == NULL)
        return NULL;
    Py_DECREF(done);
    int nonzero = PyObject_IsTrue(args[2]);
    if (nonzero < 0)
        return NULL;
    if (!nonzero)
        Py_RETURN_NONE;
    return sp_adjust(module, args + 1, 3);
}

/* ---- the OpenAI headers (router.limit_headers.go_duration, openai_headers) ------------------ */

/* The Python implementation, for what this one does not format exactly (not a float, not finite,
 * 2**53 milliseconds or more). */
static PyObject *python_go_duration(PyObject *seconds) {
    return python_call("router.limit_headers", "python_go_duration", &seconds, 1);
}

/* Writes v (>= 0) in decimal at p, two digits at a time; returns the end. */
static char *digits(char *p, long long v) {
    static const char pairs[] = "00010203040506070809101112131415161718192021222324252627282930313233343536373839"
                                "40414243444546474849505152535455565758596061626364656667686970717273747576777879"
                                "8081828384858687888990919293949596979899";
    char tmp[24], *t = tmp + sizeof tmp;
    while (v >= 100) {
        const char *d = pairs + 2 * (v % 100);
        v /= 100;
        *--t = d[1];
        *--t = d[0];
    }
    if (v >= 10) {
        *--t = pairs[2 * v + 1];
        *--t = pairs[2 * v];
    } else {
        *--t = (char)('0' + v);
    }
    size_t n = (size_t)(tmp + sizeof tmp - t);
    memcpy(p, t, n);
    return p + n;
}

/* An ASCII str of buf[0:len] (no UTF-8 decoding to do) */
static PyObject *ascii(const char *buf, Py_ssize_t len) {
    PyObject *s = PyUnicode_New(len, 127);
    if (s != NULL)
        memcpy(PyUnicode_DATA(s), buf, (size_t)len);
    return s;
}

static PyObject *ZERO; /* "0s": the reset of a window far from full, the usual one */

static PyObject *go_duration(PyObject *seconds) {
    if (!PyFloat_CheckExact(seconds))
        return python_go_duration(seconds);
    double x = PyFloat_AS_DOUBLE(seconds) * 1000.0;
    if (!isfinite(x) || fabs(x) >= EXACT_LIMIT)
        return python_go_duration(seconds);
    double r = round(x); /* Python's round(): halves to even */
    if (fabs(x - r) == 0.5)
        r = 2.0 * round(x / 2.0);
    long long ms = (long long)r;
    char buf[96], *p = buf;
    if (ms <= 0)
        return Py_NewRef(ZERO);
    if (ms < 1000) { /* the usual case (a minute's limit frees a unit every 60/N s) */
        p = digits(p, ms);
        *p++ = 'm';
        *p++ = 's';
        return ascii(buf, p - buf);
    }
    long long hours = ms / 3600000, rest = ms % 3600000;
    long long minutes = rest / 60000;
    rest %= 60000;
    long long whole = rest / 1000, frac = rest % 1000;
    if (hours) {
        p = digits(p, hours);
        *p++ = 'h';
    }
    if (hours || minutes) {
        p = digits(p, minutes);
        *p++ = 'm';
    }
    p = digits(p, whole);
    if (frac) { /* three digits, trailing zeros dropped */
        *p++ = '.';
        *p++ = (char)('0' + frac / 100);
        if (frac % 100) {
            *p++ = (char)('0' + frac / 10 % 10);
            if (frac % 10)
                *p++ = (char)('0' + frac % 10);
        }
    }
    *p++ = 's';
    return ascii(buf, p - buf);
}

static PyObject *sp_go_duration(PyObject *module, PyObject *seconds) {
    return go_duration(seconds);
}

/* str(v) for an int: a count that fits a long long formatted here (str() of an int costs ~5x) */
static PyObject *int_str(PyObject *v) {
    if (PyLong_CheckExact(v)) {
        int overflow = 0;
        long long n = PyLong_AsLongLongAndOverflow(v, &overflow);
        if (!overflow && n >= 0) {
            char buf[24];
            return ascii(buf, digits(buf, n) - buf);
        }
        if (n == -1 && PyErr_Occurred())
            return NULL;
    }
    return PyObject_Str(v);
}

/* the header names, per kind: limit, remaining, reset */
static PyObject *NAMES[2][3];

static int put(PyObject *out, PyObject *name, PyObject *value) {
    if (value == NULL)
        return -1;
    int rc = PyDict_SetItem(out, name, value);
    Py_DECREF(value);
    return rc;
}

static int put_kind(PyObject *out, int kind, PyObject *window) {
    if (window == Py_None)
        return 0;
    if (tuple_of(window, 3, "a rate window") < 0)
        return -1;
    if (put(out, NAMES[kind][0], int_str(PyTuple_GET_ITEM(window, 0))) < 0
        || put(out, NAMES[kind][1], int_str(PyTuple_GET_ITEM(window, 1))) < 0
        || put(out, NAMES[kind][2], go_duration(PyTuple_GET_ITEM(window, 2))) < 0)
        return -1;
    return 0;
}

/* openai_headers(status) -> dict: the x-ratelimit-* headers of (requests, tokens) */
static PyObject *sp_openai_headers(PyObject *module, PyObject *status) {
    if (tuple_of(status, 2, "a rate status") < 0)
        return NULL;
    PyObject *out = _PyDict_NewPresized(6); /* six entries without a resize */
    if (out == NULL)
        return NULL;
    if (put_kind(out, 0, PyTuple_GET_ITEM(status, 0)) < 0 || put_kind(out, 1, PyTuple_GET_ITEM(status, 1)) < 0) {
        Py_DECREF(out);
        return NULL;
    }
    return out;
}

/* ---- budgets (router.budget_cells.reached, add) --------------------------------------------- */

/* The spend of one cell ([tokens, nano-dollars]), a new reference kept while Python code may run
 * (an int's comparison or sum does not, a subclass's might); NULL and no error when it has none. */
static PyObject *spend_of(PyObject *spent, PyObject *id) {
    PyObject *used = PyDict_GetItemWithError(spent, id);
    if (used == NULL)
        return NULL;
    if (!PyList_CheckExact(used)) {
        PyErr_SetString(PyExc_TypeError, "a budget's spend must be a list [tokens, nano]");
        return NULL;
    }
    return Py_NewRef(used);
}

/* used[k] as a new reference, or NULL and an IndexError (a list something emptied meanwhile) */
static PyObject *spend_item(PyObject *used, Py_ssize_t k) {
    if (k >= PyList_GET_SIZE(used)) {
        PyErr_SetString(PyExc_IndexError, "list index out of range");
        return NULL;
    }
    return Py_NewRef(PyList_GET_ITEM(used, k));
}

static int check_bounds(PyObject *const *args, Py_ssize_t nargs, Py_ssize_t want, const char *usage) {
    if (nargs != want || !PyTuple_Check(args[0]) || !PyDict_Check(args[1])) {
        PyErr_SetString(PyExc_TypeError, usage);
        return -1;
    }
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(args[0]); i++)
        if (tuple_of(PyTuple_GET_ITEM(args[0], i), 3, "a budget bound") < 0)
            return -1;
    return 0;
}

/* reached(bounds, spent) -> bool: whether one of the cells ((id, max tokens, max nano-dollars), ...)
 * has spent ([tokens, nano-dollars] by id) at or past a bound */
static PyObject *sp_reached(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    if (check_bounds(args, nargs, 2, "reached(bounds: tuple, spent: dict)") < 0)
        return NULL;
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(args[0]); i++) {
        PyObject *bound = PyTuple_GET_ITEM(args[0], i);
        PyObject *used = spend_of(args[1], PyTuple_GET_ITEM(bound, 0));
        if (used == NULL) {
            if (PyErr_Occurred())
                return NULL;
            continue;
        }
        for (Py_ssize_t k = 0; k < 2; k++) {
            PyObject *value = spend_item(used, k);
            int over = value == NULL ? -1 : PyObject_RichCompareBool(value, PyTuple_GET_ITEM(bound, k + 1), Py_GE);
            Py_XDECREF(value);
            if (over != 0) {
                Py_DECREF(used);
                if (over < 0)
                    return NULL;
                Py_RETURN_TRUE;
            }
        }
        Py_DECREF(used);
    }
    Py_RETURN_FALSE;
}

/* add(bounds, spent, tokens, nano): add the use to each cell's spend (``+=``, a new [tokens, nano]
 * for a cell with none yet) */
static PyObject *sp_add(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    if (check_bounds(args, nargs, 4, "add(bounds: tuple, spent: dict, tokens, nano)") < 0)
        return NULL;
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(args[0]); i++) {
        PyObject *id = PyTuple_GET_ITEM(PyTuple_GET_ITEM(args[0], i), 0);
        PyObject *used = spend_of(args[1], id);
        if (used == NULL) {
            if (PyErr_Occurred())
                return NULL;
            PyObject *fresh = PyList_New(2);
            if (fresh == NULL)
                return NULL;
            PyList_SET_ITEM(fresh, 0, Py_NewRef(args[2]));
            PyList_SET_ITEM(fresh, 1, Py_NewRef(args[3]));
            int rc = PyDict_SetItem(args[1], id, fresh);
            Py_DECREF(fresh);
            if (rc < 0)
                return NULL;
            continue;
        }
        for (Py_ssize_t k = 0; k < 2; k++) {
            PyObject *value = spend_item(used, k);
            PyObject *sum = value == NULL ? NULL : PyNumber_InPlaceAdd(value, args[2 + k]);
            Py_XDECREF(value);
            if (sum == NULL || PySequence_SetItem(used, k, sum) < 0) {
                Py_XDECREF(sum);
                Py_DECREF(used);
                return NULL;
            }
            Py_DECREF(sum);
        }
        Py_DECREF(used);
    }
    Py_RETURN_NONE;
}

/* ---- the token estimate (router.token_estimate.estimate_tokens) ----------------------------- */

static PyObject *S_SYSTEM, *S_MESSAGES, *S_TOOLS, *S_CONTENT, *S_TYPE, *S_TEXT;

/* The characters of a message's content when it is a text or a list of text parts (non-dict parts
 * count nothing, as in Python); -1 for anything else (the Python estimate counts it). */
static Py_ssize_t content_chars(PyObject *content) {
    if (PyUnicode_CheckExact(content))
        return PyUnicode_GET_LENGTH(content);
    if (content == Py_None)
        return 0;
    if (!PyList_CheckExact(content))
        return -1;
    Py_ssize_t chars = 0;
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(content); i++) {
        PyObject *part = PyList_GET_ITEM(content, i);
        if (!PyDict_Check(part))
            continue; /* not a part: Python's isinstance skips it too */
        if (!PyDict_CheckExact(part))
            return -1;
        PyObject *kind = PyDict_GetItemWithError(part, S_TYPE);
        if (kind == NULL || !PyUnicode_CheckExact(kind) || PyUnicode_Compare(kind, S_TEXT) != 0)
            return -1; /* not a text part (or an error, which the Python estimate meets again) */
        PyObject *text = PyDict_GetItemWithError(part, S_TEXT);
        if (text == NULL || text == Py_None) {
            if (PyErr_Occurred())
                return -1;
            continue;
        }
        if (!PyUnicode_CheckExact(text))
            return -1;
        chars += PyUnicode_GET_LENGTH(text);
    }
    return chars;
}

/* The estimate of a request whose system prompt and messages are plain text and that has no tools;
 * -1 for any other (the Python estimate counts it). */
static long long text_estimate(PyObject *req) {
    long long result = -1;
    PyObject *system = PyObject_GetAttr(req, S_SYSTEM);
    PyObject *messages = system ? PyObject_GetAttr(req, S_MESSAGES) : NULL;
    PyObject *tools = messages ? PyObject_GetAttr(req, S_TOOLS) : NULL;
    if (tools == NULL) {
        PyErr_Clear();
        goto done;
    }
    if ((system != Py_None && !PyUnicode_CheckExact(system)) || !PyList_CheckExact(messages)
        || (tools != Py_None && (!PyList_CheckExact(tools) || PyList_GET_SIZE(tools))))
        goto done;
    long long chars = system == Py_None ? 0 : PyUnicode_GET_LENGTH(system);
    Py_ssize_t n = PyList_GET_SIZE(messages);
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *message = PyList_GET_ITEM(messages, i);
        if (!PyDict_CheckExact(message))
            goto done;
        PyObject *content = PyDict_GetItemWithError(message, S_CONTENT);
        Py_ssize_t c = content == NULL ? (PyErr_Occurred() ? -1 : 0) : content_chars(content);
        if (c < 0) {
            PyErr_Clear();
            goto done;
        }
        chars += c;
    }
    int has_system = system != Py_None && PyUnicode_GET_LENGTH(system) > 0;
    long long total = (chars + 3) / 4 + 4LL * n + (has_system ? 3 : 0); /* CHARS_PER_TOKEN, the overheads */
    result = total > 1 ? total : 1;
done:
    Py_XDECREF(system);
    Py_XDECREF(messages);
    Py_XDECREF(tools);
    return result;
}

/* estimate_tokens(req) -> int: router.token_estimate.python_estimate_tokens, the usual request here */
static PyObject *sp_estimate_tokens(PyObject *module, PyObject *req) {
    long long n = text_estimate(req);
    if (n >= 0)
        return PyLong_FromLongLong(n);
    return python_call("router.token_estimate", "python_estimate_tokens", &req, 1);
}

/* ---- the module ---------------------------------------------------------------------------- */

static PyMethodDef methods[] = {
    {"take", (PyCFunction)(void (*)(void))sp_take, METH_FASTCALL,
     "take(rates, tokens, now, over) -> (requests, tokens): router.limit_cells.take"},
    {"admit", (PyCFunction)(void (*)(void))sp_admit, METH_FASTCALL,
     "admit(slots, rates, tokens, now, over) -> (requests, tokens): router.limit_cells.admit"},
    {"release", sp_release, METH_O, "release(slots): router.limit_cells.release"},
    {"adjust", (PyCFunction)(void (*)(void))sp_adjust, METH_FASTCALL,
     "adjust(tpm, delta, now): router.limit_cells.adjust"},
    {"settle", (PyCFunction)(void (*)(void))sp_settle, METH_FASTCALL,
     "settle(slots, tpm, delta, now): router.limit_cells.settle"},
    {"go_duration", sp_go_duration, METH_O, "go_duration(seconds) -> str: router.limit_headers.go_duration"},
    {"reached", (PyCFunction)(void (*)(void))sp_reached, METH_FASTCALL,
     "reached(bounds, spent) -> bool: router.budget_cells.reached"},
    {"add", (PyCFunction)(void (*)(void))sp_add, METH_FASTCALL,
     "add(bounds, spent, tokens, nano): router.budget_cells.add"},
    {"estimate_tokens", sp_estimate_tokens, METH_O,
     "estimate_tokens(req) -> int: router.token_estimate.estimate_tokens"},
    {"openai_headers", sp_openai_headers, METH_O,
     "openai_headers(status) -> dict: router.limit_headers.openai_headers"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT, "router._speedups",
    "The per-request arithmetic of client rate limits, compiled (router/limit_cells.py is the reference).",
    -1, methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__speedups(void) {
    static const char *kinds[2] = {"requests", "tokens"};
    static const char *whats[3] = {"limit", "remaining", "reset"};
    for (int k = 0; k < 2; k++)
        for (int w = 0; w < 3; w++)
            if (NAMES[k][w] == NULL
                && (NAMES[k][w] = PyUnicode_FromFormat("x-ratelimit-%s-%s", whats[w], kinds[k])) == NULL)
                return NULL;
    static struct { PyObject **at; const char *text; } names[] = {
        {&S_SYSTEM, "system"}, {&S_MESSAGES, "messages"}, {&S_TOOLS, "tools"},
        {&S_CONTENT, "content"}, {&S_TYPE, "type"}, {&S_TEXT, "text"},
    };
    if (ZERO == NULL && (ZERO = PyUnicode_InternFromString("0s")) == NULL)
        return NULL;
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (*names[i].at == NULL && (*names[i].at = PyUnicode_InternFromString(names[i].text)) == NULL)
            return NULL;
    if (PyType_Ready(&CounterType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&module_def);
    if (m == NULL)
        return NULL;
    Py_INCREF(&CounterType);
    if (PyModule_AddObject(m, "Counter", (PyObject *)&CounterType) < 0) {
        Py_DECREF(&CounterType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}

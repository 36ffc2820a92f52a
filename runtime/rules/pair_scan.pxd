# The C types of pair_scan.py when Cython compiles it (see that module).
import cython

@cython.locals(index=cython.Py_ssize_t, role=cython.uchar, t=cython.longlong, start=cython.longlong,
               newest=cython.longlong, old=tuple, seen=object, time=object)
cpdef list scan(bytes roles, bytes kinds, list customers, list times, list sources, source_of, list ids,
                dict clocks, dict states, long long within)

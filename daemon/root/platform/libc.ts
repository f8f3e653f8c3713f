import koffi from 'koffi';

/** The libc calls the root daemon makes through koffi (Node has no TUN, netlink or socket options of this kind). */
function bind() {
  const lib = koffi.load('libc.so.6');
  return {
    open: lib.func('int open(const char *path, int flags)'),
    close: lib.func('int close(int fd)'),
    ioctl: lib.func('int ioctl(int fd, unsigned long request, void *arg)'),
    read: lib.func('long read(int fd, _Out_ uint8_t *buf, unsigned long count)'),
    write: lib.func('long write(int fd, const uint8_t *buf, unsigned long count)'),
    poll: lib.func('int poll(_Inout_ uint8_t *fds, unsigned long nfds, int timeout)'),
    socket: lib.func('int socket(int domain, int type, int protocol)'),
    bind: lib.func('int bind(int fd, const uint8_t *addr, uint32_t len)'),
    setsockopt: lib.func('int setsockopt(int fd, int level, int name, const uint8_t *value, uint32_t len)'),
    getsockopt: lib.func('int getsockopt(int fd, int level, int optname, _Out_ uint8_t *optval, _Inout_ uint32_t *optlen)'),
  };
}

let bound: ReturnType<typeof bind> | undefined;

/** Bound on first use: a process that never needs them never loads libc through koffi. */
export function libc(): ReturnType<typeof bind> {
  bound ??= bind();
  return bound;
}

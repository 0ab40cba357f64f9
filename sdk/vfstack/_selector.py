"""`StackSelector`: a `selectors.BaseSelector` over vfstack sockets and
ordinary kernel file objects at once.

vfstack sockets are watched by an `Epoll` of their stack; kernel file
objects (pipes, kernel sockets, a signal fd) by the platform's default
selector, which also watches the stack's doorbell (`Stack.fileno()`). A
`select()` first looks at the stack without blocking; only if nothing is
ready there does it announce sleep on the event ring and block in the
kernel, so the stack rings the doorbell exactly when it has news.

Keys of vfstack sockets are looked up by the socket object (their
`fileno()` is a slot number that may equal some kernel fd), kernel file
objects by object or fd as usual. One thread at a time may `select()`.

When the session ends, the doorbell hangs up (readable for ever, rung by
nobody): the selector drops it, its vfstack sockets are reported ready
(to fail as they should, see vfstack.sockets.socket), its kernel objects go on.
"""

from __future__ import annotations

import select
import selectors
from collections.abc import Mapping

from vfstack.sockets.socket import Socket

__all__ = ["StackSelector"]

EVENT_READ = selectors.EVENT_READ
EVENT_WRITE = selectors.EVENT_WRITE
_DOORBELL = object()  # data of the stack doorbell's key in the kernel selector


def _epoll_mask(events: int) -> int:
    mask = 0
    if events & EVENT_READ:
        mask |= select.EPOLLIN
    if events & EVENT_WRITE:
        mask |= select.EPOLLOUT
    return mask


def _selector_events(mask: int) -> int:
    """As the stdlib's EpollSelector reads epoll bits: ERR/HUP wake both sides."""
    events = 0
    if mask & ~select.EPOLLIN:
        events |= EVENT_WRITE
    if mask & ~select.EPOLLOUT:
        events |= EVENT_READ
    return events


class _KeyMap(Mapping):
    def __init__(self, selector: StackSelector) -> None:
        self._selector = selector

    def __len__(self) -> int:
        selector = self._selector
        bell = 0 if selector._bell is None else 1
        return len(selector._stack_keys) + len(selector._kernel.get_map()) - bell

    def __getitem__(self, fileobj):
        key = self._selector._key_of(fileobj)
        if key is None:
            raise KeyError(f"{fileobj!r} is not registered")
        return key

    def __iter__(self):
        yield from (key.fileobj for key in self._selector._stack_keys.values())
        for fd, key in self._selector._kernel.get_map().items():
            if key.data is not _DOORBELL:
                yield fd


class StackSelector(selectors.BaseSelector):
    """Selector for one `vfstack.Stack`'s sockets plus kernel file objects."""

    def __init__(self, stack) -> None:
        self._stack = stack
        self._epoll = stack.epoll()
        self._stack_keys: dict[int, selectors.SelectorKey] = {}  # slot -> key
        self._kernel = selectors.DefaultSelector()
        self._bell: int | None = stack.fileno()  # None once dropped
        self._kernel.register(self._bell, EVENT_READ, _DOORBELL)
        self._map = _KeyMap(self)

    def _is_ours(self, fileobj) -> bool:
        return isinstance(fileobj, Socket) and fileobj._stack is self._stack

    def _key_of(self, fileobj) -> selectors.SelectorKey | None:
        if self._is_ours(fileobj):
            key = self._stack_keys.get(fileobj.fileno())
            return key if key is not None and key.fileobj is fileobj else None
        try:
            key = self._kernel.get_key(fileobj)
        except KeyError:
            return None
        return None if key.data is _DOORBELL else key

    def register(self, fileobj, events: int, data=None) -> selectors.SelectorKey:
        if not events or events & ~(EVENT_READ | EVENT_WRITE):
            raise ValueError(f"Invalid events: {events!r}")
        if not self._is_ours(fileobj):
            if isinstance(fileobj, Socket):
                raise ValueError(f"{fileobj!r} belongs to another stack")
            return self._kernel.register(fileobj, events, data)
        slot = fileobj.fileno()
        if slot < 0:
            raise ValueError(f"Invalid file descriptor: {slot}")
        stale = self._stack_keys.get(slot)
        if stale is not None and stale.fileobj.fileno() >= 0:
            raise KeyError(f"{fileobj!r} (FD {slot}) is already registered")
        self._epoll.register(fileobj, _epoll_mask(events))
        key = selectors.SelectorKey(fileobj, slot, events, data)
        self._stack_keys[slot] = key
        return key

    def unregister(self, fileobj) -> selectors.SelectorKey:
        if not self._is_ours(fileobj):
            if self._key_of(fileobj) is None:
                raise KeyError(f"{fileobj!r} is not registered")
            return self._kernel.unregister(fileobj)
        key = self._key_of(fileobj)
        if key is None:
            raise KeyError(f"{fileobj!r} is not registered")
        del self._stack_keys[key.fd]
        if fileobj.fileno() >= 0:  # a closed socket already left the Epoll
            self._epoll.unregister(fileobj)
        return key

    def modify(self, fileobj, events: int, data=None) -> selectors.SelectorKey:
        if not self._is_ours(fileobj):
            if self._key_of(fileobj) is None:
                raise KeyError(f"{fileobj!r} is not registered")
            return self._kernel.modify(fileobj, events, data)
        key = self._key_of(fileobj)
        if key is None:
            raise KeyError(f"{fileobj!r} is not registered")
        if not events or events & ~(EVENT_READ | EVENT_WRITE):
            raise ValueError(f"Invalid events: {events!r}")
        if events != key.events:
            self._epoll.modify(fileobj, _epoll_mask(events))
        key = key._replace(events=events, data=data)
        self._stack_keys[key.fd] = key
        return key

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        """Ready keys of both worlds; blocks up to `timeout` (None: forever)."""
        stack = self._stack
        ready = self._epoll.poll(0)
        kernel_timeout = 0 if ready else timeout
        asleep = False
        if stack._ended is not None:
            self._drop_bell()
        elif kernel_timeout is None or kernel_timeout > 0:
            asleep = stack._sleep_begin()
            if not asleep:
                kernel_timeout = 0
        kernel_ready = []
        try:
            kernel_ready = self._kernel.select(kernel_timeout)
        finally:
            if asleep:
                stack._sleep_end(any(key.data is _DOORBELL for key, _ in kernel_ready))
        if not ready:
            ready = self._epoll.poll(0)
        found = []
        for slot, mask in ready:
            key = self._stack_keys.get(slot)
            if key is not None:
                events = _selector_events(mask) & key.events
                if events:
                    found.append((key, events))
        found.extend(pair for pair in kernel_ready if pair[0].data is not _DOORBELL)
        return found

    def get_map(self) -> Mapping:
        return self._map

    def _drop_bell(self) -> None:
        if self._bell is not None:
            self._kernel.unregister(self._bell)
            self._bell = None

    def close(self) -> None:
        self._stack_keys.clear()
        self._epoll.close()
        self._kernel.close()

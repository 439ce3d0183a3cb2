"""The bottom layer every program shares: the command-line parser and device rule (`cli`), the bad-input error
(`errors`), a process's place under torchrun (`distributed`). It imports nothing of `taco`, `dynamics`, `app` or
`experiments`."""

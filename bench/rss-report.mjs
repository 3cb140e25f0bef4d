// Preloaded into a process under measurement: reports its peak RSS when it exits.
process.on('exit', () => {
  process.stderr.write(`\nferry-bench-max-rss-kib ${process.resourceUsage().maxRSS}\n`);
});

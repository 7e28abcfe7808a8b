-- The planner's view of the central search's number match (version 4's reversed-number indexes).
-- PostgreSQL keeps statistics of an index's expression only for indexes without a WHERE, and
-- those are partial (`leg IS NULL`): without statistics of `reverse(remote_number)` it guessed
-- 0.5 % of all rows (50,000 of 10,000,000) for one number's calls, and so planned a parallel scan
-- with JIT compilation, about 100 ms where the rows take 1 ms.  Statistics on the expressions
-- themselves give it the real figure; ANALYZE fills them now rather than when autovacuum next
-- analyzes the table (after a tenth of its rows have changed: months, on a large centre).

CREATE STATISTICS calls_remote_tail_stats ON (reverse(remote_number)) FROM calls;
CREATE STATISTICS calls_local_tail_stats ON (reverse(local_number)) FROM calls;
ANALYZE calls;

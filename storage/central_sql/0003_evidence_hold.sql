-- A harassment mark's evidence hold (storage/marks.py): the site's `evidence_until`, so the
-- centre sees which calls are kept as evidence, and until when, beside the legal holds.

ALTER TABLE calls ADD COLUMN evidence_until DOUBLE PRECISION;
CREATE INDEX calls_evidence ON calls (site, evidence_until) WHERE evidence_until IS NOT NULL;

-- Expired jti rows are forgotten by the sweeper (see Store::purge_jti).
CREATE INDEX used_jti_expiry ON used_jti (expires_at) WHERE expires_at IS NOT NULL;

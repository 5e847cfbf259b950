-- Identifies a claim. `attempts` counts tries and is reset when a new part
-- arrives; claim_token only grows, so a stale claim (its lease expired, the id
-- was claimed again) can never match and finish someone else's claim.
ALTER TABLE images ADD COLUMN claim_token BIGINT NOT NULL DEFAULT 0;

ALTER TABLE images DROP COLUMN claim_token;

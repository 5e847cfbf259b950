-- One row per id: where its merge stands.
--   pending  some configured source has not delivered its part yet
--   ready    every part is stored; waiting to be claimed (next_attempt_at)
--   merging  claimed by a cs instance until lease_until (then claimable again)
--   merged   output_path holds the merged image
--   failed   error says why (a part failed to download, or merging kept failing)
CREATE TABLE images (
    id              TEXT PRIMARY KEY,
    state           TEXT NOT NULL DEFAULT 'pending'
                    CHECK (state IN ('pending', 'ready', 'merging', 'merged', 'failed')),
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    lease_until     TIMESTAMPTZ,
    claimed_by      TEXT,
    output_path     TEXT,
    error           TEXT,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    merged_at       TIMESTAMPTZ
);

CREATE INDEX images_claimable ON images (next_attempt_at) WHERE state IN ('ready', 'merging');

-- One row per (id, source): the latest message received for that part.
CREATE TABLE parts (
    id              TEXT NOT NULL REFERENCES images (id),
    source          TEXT NOT NULL,
    status          TEXT NOT NULL CHECK (status IN ('stored', 'failed')),
    url             TEXT NOT NULL,
    path            TEXT,
    size            BIGINT,
    sha256          TEXT,
    content_type    TEXT,
    error           TEXT,
    topic           TEXT NOT NULL,
    kafka_partition INTEGER NOT NULL,
    kafka_offset    BIGINT NOT NULL,
    received_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (id, source)
);

-- Messages that could not be understood (bad JSON, unknown version, bad id):
-- kept so that nothing is dropped silently. `cs failures` lists them.
CREATE TABLE rejected_messages (
    topic           TEXT NOT NULL,
    kafka_partition INTEGER NOT NULL,
    kafka_offset    BIGINT NOT NULL,
    message_key     TEXT,
    error           TEXT NOT NULL,
    payload_excerpt TEXT NOT NULL,
    received_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (topic, kafka_partition, kafka_offset)
);

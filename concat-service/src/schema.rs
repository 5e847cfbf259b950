// @generated-style: matches `diesel print-schema` for migrations/.

diesel::table! {
    images (id) {
        id -> Text,
        state -> Text,
        attempts -> Int4,
        next_attempt_at -> Timestamptz,
        lease_until -> Nullable<Timestamptz>,
        claimed_by -> Nullable<Text>,
        output_path -> Nullable<Text>,
        error -> Nullable<Text>,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
        merged_at -> Nullable<Timestamptz>,
        claim_token -> Int8,
    }
}

diesel::table! {
    parts (id, source) {
        id -> Text,
        source -> Text,
        status -> Text,
        url -> Text,
        path -> Nullable<Text>,
        size -> Nullable<Int8>,
        sha256 -> Nullable<Text>,
        content_type -> Nullable<Text>,
        error -> Nullable<Text>,
        topic -> Text,
        kafka_partition -> Int4,
        kafka_offset -> Int8,
        received_at -> Timestamptz,
    }
}

diesel::table! {
    rejected_messages (topic, kafka_partition, kafka_offset) {
        topic -> Text,
        kafka_partition -> Int4,
        kafka_offset -> Int8,
        message_key -> Nullable<Text>,
        error -> Text,
        payload_excerpt -> Text,
        received_at -> Timestamptz,
    }
}

diesel::joinable!(parts -> images (id));
diesel::allow_tables_to_appear_in_same_query!(images, parts, rejected_messages);

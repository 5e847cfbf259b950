DROP TABLE rejected_messages;
DROP TABLE parts;
DROP TABLE images;

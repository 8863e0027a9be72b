-- A user's console password, as argon2id in PHC form; NULL until one is set. A user
-- without one cannot sign in to the console.
ALTER TABLE users ADD COLUMN password_hash TEXT;

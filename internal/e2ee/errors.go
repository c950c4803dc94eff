package e2ee

import "errors"

// Errors of Seal, Open and the box key file. Open reports each failure as exactly one of
// ErrMalformed, ErrDecrypt, ErrBadSender, ErrBadSignature and ErrWrongRecipient (wrapped
// with detail), so that a client can count them apart and tell its user what happened.
var (
	// ErrMalformed: the envelope or its decrypted content does not follow the layout in
	// the package comment (bad length or version, a low-order ephemeral key, a length
	// field that lies, non-zero padding).
	ErrMalformed = errors.New("e2ee: malformed envelope; the sender runs an incompatible or broken client")

	// ErrDecrypt: the AEAD tag does not verify. Either the envelope was sealed for another
	// box key (the sender used a stale presence record) or it was altered in transit.
	ErrDecrypt = errors.New("e2ee: envelope does not decrypt with this box key (sealed for an older box key, or altered in transit)")

	// ErrBadSender: the sender's credential is forged, expired, issued by another login
	// server, not a user credential, or names someone other than the message's sender.
	ErrBadSender = errors.New("e2ee: sender's credential is not valid; do not trust the message, and ask the sender to log in again")

	// ErrBadSignature: the credential is valid but the message is not signed by its key,
	// or it was signed for another recipient's box key and re-encrypted.
	ErrBadSignature = errors.New("e2ee: sender's signature does not verify (forged, or re-encrypted from a message to someone else)")

	// ErrWrongRecipient: the message is addressed to another user name.
	ErrWrongRecipient = errors.New("e2ee: message is addressed to someone else")

	// ErrInvalidMessage: Seal was given something it cannot send (empty or overlong
	// names, overlong text, a malformed private key).
	ErrInvalidMessage = errors.New("e2ee: message cannot be sealed")

	// ErrBadBoxKey: the recipient's published box key is a low-order point, which would
	// make the shared secret public; the presence record is broken or malicious.
	ErrBadBoxKey = errors.New("e2ee: recipient's box key is invalid; refetch their presence record")

	// ErrBadKeyFile: the box key file exists but does not hold a box key.
	ErrBadKeyFile = errors.New("e2ee: not a peerline box key file")
)

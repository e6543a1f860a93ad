"""mOTP in one place: TOTP (`totp`), users' enrolment, verification inputs and unlock
(`enrolment`), the channel's shell (`channel`) and the HTTP routes (`routes`). Users are stored
through `service.store.store.Store`, in the slot of their verifications."""
